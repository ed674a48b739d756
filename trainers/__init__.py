"""Dassl trainers of this project; ``train.py`` imports every module here so they register."""
