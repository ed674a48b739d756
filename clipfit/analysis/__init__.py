"""Fine-tuning analysis of finished runs (the paper's section 4.3 and appendix H).

``python -m clipfit.analysis <subcommand> --help``:

- ``changes``: squared change of each tuned layer from pre-trained CLIP (Figures 3, 4b, 7-10);
- ``grads``: gradient statistics recorded with ``TRAINER.CLIPFIT.LOG_GRAD_STATS`` (Figures 4a, 11);
- ``tsne``: t-SNE of image features, zero-shot CLIP next to the fine-tuned model (Figure 5);
- ``importance``: rank blocks by change and write top-k / bottom-k layer configs (section 4.3).

Each subcommand has a ``run_<name>`` function in its module for use from Python.
"""
