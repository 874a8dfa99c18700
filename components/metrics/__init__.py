"""The metric core: AUROC, average precision, log loss, RCE and calibration, with one binning
and one clipping, used by evaluation and by the data generator's oracle alike."""
