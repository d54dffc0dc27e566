"""The paper's numbers (Tran et al. 2016), one record per printed value.

Every table and tool that quotes the paper reads it from here: the nets of
``models.v2v`` carry the results they reproduce (``Variant.paper``, ``Variant.teacher``),
``tools.evaluate`` looks values up with ``models.v2v.paper_value``, ``tools.train
--sintel-3fold`` uses ``SINTEL_3FOLD``, and ``python -m models.generate`` writes the
README's tables from them. Nothing here needs the engine.
"""
from __future__ import annotations

from dataclasses import dataclass

from models.paths import db_rel

# The metric of each task, as the paper reports it: (name, unit).
METRICS = {"seg": ("pixel accuracy", "%"), "flow": ("EPE", "px"), "color": ("ADE", "")}


@dataclass(frozen=True)
class PaperResult:
    """One value printed in the paper: where (``table``: "Table 1", or a section when the
    number is only in the text), the paper's name for the method, the value of the task's
    metric, and what it was measured on. ``testset`` is the key ``tools.evaluate`` uses
    (gatech, ucf101, sintel); ``db`` a database to evaluate on instead of the one in the
    net's TEST data layer ("" for that one)."""
    table: str
    method: str
    task: str
    value: float
    testset: str
    measured_on: str
    db: str = ""

    @property
    def metric(self) -> str:
        name, unit = METRICS[self.task]
        return f"{name} {self.value}" + (f" {unit}" if unit else "")

    def text(self) -> str:
        """E.g. "Table 1, V2V: pixel accuracy 76.0 % (GATECH)"."""
        return f"{self.table}, {self.method}: {self.metric} ({self.measured_on})"


def _table1(method: str, value: float) -> PaperResult:
    return PaperResult("Table 1", method, "seg", value, "gatech", "GATECH")


SINTEL = "Sintel training set, vs ground truth"
SINTEL_DB = db_rel("sintel", "final")  # Table 2 compares with FlowFields' final-pass 5.81

SEG_V2V = _table1("V2V", 76.0)
SEG_V2V_0 = _table1("V2V-0", 66.7)
SEG_REMOVE_SKIP = _table1("V2V-remove-skip", 74.7)
SEG_REMOVE_SKIP_0 = _table1("V2V-remove-skip-0", 60.8)
SEG_CONV3B_UP = _table1("Conv3b+Up", 69.7)
SEG_CONV4B_UP = _table1("Conv4b+Up", 72.7)
SEG_CONV5B_UP = _table1("Conv5b+Up", 72.1)
SEG_2D_V2V = _table1("2D-V2V", 55.7)
FLOW_UCF101 = PaperResult("§5", "V2V", "flow", 1.24, "ucf101", "UCF101 split 1, vs Brox's flow")
FLOW_SINTEL = PaperResult("Table 2", "V2V", "flow", 8.86, "sintel", SINTEL, SINTEL_DB)
BROX_SINTEL = PaperResult("Table 2", "Brox", "flow", 8.89, "sintel", SINTEL, SINTEL_DB)  # the teacher
SINTEL_3FOLD = PaperResult("Table 2", "finetuned-V2V", "flow", 8.38, "sintel",
                           SINTEL + ", 3-fold cross validation")
COLOR_V2V = PaperResult("§6", "V2V", "color", 0.1375, "ucf101", "UCF101 split 1")
COLOR_2D_V2V = PaperResult("§6", "2D-V2V", "color", 0.1495, "ucf101", "UCF101 split 1")
