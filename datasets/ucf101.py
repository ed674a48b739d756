"""UCF101: 101 human actions, one middle frame per video; class names like "Apply_Eye_Makeup"."""

import os
import re
from typing import Dict, List

from clipfit.data.folders import CoOpDataset
from clipfit.data.splits import Split, annotation_lines, make_datums, split_trainval
from clipfit.engine import DATASET_REGISTRY, Datum

LIST_DIR = "ucfTrainTestlist"
CLASS_LIST = f"{LIST_DIR}/classInd.txt"
TRAIN_LIST = f"{LIST_DIR}/trainlist01.txt"
TEST_LIST = f"{LIST_DIR}/testlist01.txt"


def action_classname(action: str) -> str:
    """CoOp's class name (and frame folder) of an action: words split at capitals, joined by "_"."""
    return "_".join(re.findall("[A-Z][^A-Z]*", action))


@DATASET_REGISTRY.register()
class UCF101(CoOpDataset):
    """UCF101 middle frames with CoOp's split; without it, split 01 (20% of its train list as val)."""

    dataset_dir = "ucf101"
    image_folder = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    doc_section = "UCF101"
    layout = """
ucf101/
├── UCF-101-midframes/ Apply_Eye_Makeup/v_ApplyEyeMakeup_g01_c01.jpg, ...
├── ucfTrainTestlist/  classInd.txt, trainlist01.txt, testlist01.txt (only without the split file)
└── split_zhou_UCF101.json
"""

    def create_split(self) -> Split:
        self.require_annotations(CLASS_LIST, TRAIN_LIST, TEST_LIST)
        cname2lab = {}
        for line in annotation_lines(os.path.join(self.dataset_dir, CLASS_LIST)):
            label, action = line.split(" ")
            cname2lab[action] = int(label) - 1
        trainval = self.read_list(cname2lab, TRAIN_LIST)
        test = self.read_list(cname2lab, TEST_LIST)
        train, val = split_trainval(trainval)
        return train, val, test

    def read_list(self, cname2lab: Dict[str, int], filename: str) -> List[Datum]:
        """Rows ``<Action>/<video>.avi[ <label>]``, mapped to the video's middle frame."""
        path = os.path.join(self.dataset_dir, filename)
        rows = []
        for line in annotation_lines(path):
            action, video = line.split(" ")[0].split("/")
            if action not in cname2lab:
                raise self.layout_error(f"{path} lists the action {action!r}, which is not in {CLASS_LIST}.")
            classname = action_classname(action)
            rows.append((os.path.join(classname, video.replace(".avi", ".jpg")), cname2lab[action], classname))
        return make_datums(rows, self.image_dir, path)
