# kiln's container image (docs/deploy.md): multi-stage, non-root, with the
# worker and the plugins beside kiln as `make build` lays them out.
#
#   docker build -t kiln --build-arg VERSION=$(git describe --always --dirty) .
#   docker run --gpus all --shm-size 16g -p 8188:8188 \
#     -e KILN_ADMIN_TOKEN=$(openssl rand -hex 32) \
#     -v kiln-data:/var/lib/kiln -v /srv/models:/models:ro kiln
#
# GPUs come through the NVIDIA Container Toolkit (--gpus all, or the
# nvidia runtime class in Kubernetes): it mounts the driver's libraries,
# libnvidia-ml.so.1 (NVML, which kiln opens) among them, and the
# /dev/nvidia* devices. Without it kiln runs simulated devices.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# make build: the built-in WASM policies, kiln, kiln-worker-sim and the
# storage and loader plugins into bin/ (npm is absent here: the optional
# AssemblyScript example policy is skipped, as make says).
RUN make build VERSION=${VERSION}

FROM debian:bookworm-slim
# python3-msgpack: the Python worker SDK (sdk/python); a GPU image adds
# PyTorch on top (docs/deploy.md) and sets workers.command to
# /opt/kiln/python/kiln-worker-torch.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-msgpack \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/kiln --no-create-home kiln \
 && mkdir -p /var/lib/kiln /models /etc/kiln \
 && chown kiln:kiln /var/lib/kiln
COPY --from=build /src/bin/ /opt/kiln/bin/
COPY --from=build /src/sdk/python/ /opt/kiln/python/
COPY deploy/container/kiln.yaml /etc/kiln/kiln.yaml
ENV PATH=/opt/kiln/bin:$PATH \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER kiln:kiln
WORKDIR /var/lib/kiln
VOLUME ["/var/lib/kiln"]
EXPOSE 8188
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/kiln/bin/kiln"]
CMD ["serve", "--config", "/etc/kiln/kiln.yaml"]
