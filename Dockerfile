# The Airflow image of lerobot-kfold: the official Airflow 3.3.2 image (Python 3.12), extended as the
# Airflow docs recommend ("Building the image"), with the pinned runtime stack of requirements.txt and the
# lerobot_kfold library. docker-compose.yaml builds it (`docker compose up -d --build`).
FROM apache/airflow:3.3.2-python3.12

USER root
# Headless simulator and video: OSMesa/GL and GLib for MuJoCo rendering and OpenCV, FFmpeg for LeRobot's
# video decoding (torchcodec needs the system FFmpeg libraries).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg libgl1 libglib2.0-0 libosmesa6 \
    && apt-get autoremove -yqq --purge \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

USER airflow
# Optional, e.g. `--build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu` for CPU-only torch
# wheels of the same pinned versions (untested; see README). Unset by default: torch comes from PyPI.
ARG PIP_EXTRA_INDEX_URL
COPY --chown=airflow:0 requirements.txt /opt/airflow/requirements.txt
# requirements.txt pins apache-airflow==3.3.2, the base image's own version, so pip keeps this Airflow
# (the docs' advice: always name the Airflow version when adding packages to the image).
RUN pip install --no-cache-dir -r /opt/airflow/requirements.txt

# The library, importable through PYTHONPATH (docker-compose.yaml also mounts ./include over it, so code
# edits need no rebuild). dags/ and plugins/ are copied too, so the image runs without the mounts.
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
ENV PYTHONPATH=/opt/airflow/include \
    LEROBOT_KFOLD_STORAGE=/opt/airflow/storage \
    HF_HOME=/opt/airflow/storage/.cache/huggingface \
    MUJOCO_GL=osmesa
