# A CUDA PyTorch image with DALI and the scripts; the default command runs the quick start.
#   docker build -t kd .
#   docker run --gpus all --ipc=host -v /data:/data kd \
#       torchrun --nproc_per_node=8 train_teacher.py --dataset imagenet --data-dir /data/imagenet --model resnet50 --amp bf16
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1
WORKDIR /workspace/kd
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
CMD ["bash", "scripts/quickstart.sh"]
