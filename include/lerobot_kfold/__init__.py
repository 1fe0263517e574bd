"""K-fold cross-validation of LeRobot policy training.

This package is the library: it plans episode folds, records the simulator demo dataset, trains and
validates one fold, and aggregates fold results. It never imports Airflow, so the same code runs in a
plain Python process, in an Airflow worker and inside a Modal container.
"""

__version__ = "0.1.0"
