"""Data validation: streaming statistics, anomaly rules, drift and an HTML report (see validator.py)."""

from components.validate.anomalies import CODES, Anomaly
from components.validate.config import ValidationConfig, load_validation_config
from components.validate.validator import ValidationResult, run

__all__ = ["CODES", "Anomaly", "ValidationConfig", "ValidationResult", "load_validation_config", "run"]
