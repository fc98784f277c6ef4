#!/usr/bin/env bash
# Prepare, on this machine, what a lent GPU machine needs and cannot fetch (docs/gpu.md):
#   .whl/      the Python wheels its image lacks (Python 3.12, x86-64): rnnlab's runtime needs
#              beyond the image's packages (torch, numpy, pandas, sacrebleu, sentencepiece,
#              pytest... are there); --no-deps, pinned, one version each.
#   .gpudata/  the PTB and Multi30k (de, en) files, read with RNNLAB_DATA=.gpudata (../shared
#              does not travel to the device).
# Both folders are git-ignored and travel only when a device call names them in `carry`.
#
#   bash scripts/gpu_prepare.sh            # from the repository root; ~45 MB in all
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SRC=${RNNLAB_DATA:-$(cd .. && pwd)/shared/datasets}

# What the image lacks, resolved from mlflow==3.17.2 hydra-core==1.3.8 sacremoses==0.1.1 for
# cp312 manylinux and the image's package list (KINDS.md, "Python packages already there").
WHEELS=(
  alembic==1.20.1 annotated-types==0.8.0 blinker==1.9.0 cachetools==7.3.3 cffi==2.1.1
  cryptography==50.0.2 databricks-sdk==0.167.0 docker==7.2.0 fastapi==0.165.0 flask==3.1.3
  flask-cors==6.0.5 gitdb==4.0.12 gitpython==3.2.1 google-auth==2.63.1 graphene==3.4.3
  graphql-core==3.2.14 graphql-relay==3.2.0 gunicorn==26.2.0 huey==3.5.4
  importlib-metadata==9.1.0 itsdangerous==2.2.0 mako==1.4.3 mlflow==3.17.2
  mlflow-skinny==3.17.2 mlflow-tracing==3.17.2 opentelemetry-api==1.45.2
  opentelemetry-proto==1.45.2 opentelemetry-sdk==1.45.2
  opentelemetry-semantic-conventions==0.66b2 prettytable==3.19.0 pyasn1==0.6.5
  pyasn1-modules==0.4.2 pycparser==3.12 pydantic==2.14.4 pydantic-core==2.50.5
  python-dotenv==1.2.4 sacremoses==0.1.1 skops==0.16.0 smmap==5.0.3 sqlalchemy==2.1.9
  sqlparse==0.6.1 starlette==1.10.0 typing-inspection==0.4.5 uvicorn==0.55.0 wcwidth==0.9.5
  hydra-core==1.3.8 omegaconf==2.3.1
)
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$tag")
done
mkdir -p .whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" -d .whl "${WHEELS[@]}"
# hydra-core 1.3 needs antlr4-python3-runtime 4.9.*, published as a source archive only: its
# wheel is pure Python, built here
"$PY" -m pip wheel --quiet --no-deps -w .whl antlr4-python3-runtime==4.9.3

mkdir -p .gpudata/ptb .gpudata/multi30k
cp "$SRC"/ptb/ptb.{train,valid,test}.txt .gpudata/ptb/
for f in train val test_2016_flickr; do cp "$SRC/multi30k/$f".{de,en}.gz .gpudata/multi30k/; done
du -sh .whl .gpudata
