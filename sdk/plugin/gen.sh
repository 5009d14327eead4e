#!/usr/bin/env bash
# Regenerates the gRPC code from proto/. Needs protoc (apt: protobuf-compiler),
# protoc-gen-go v1.36.12 and protoc-gen-go-grpc v1.3.0 on PATH:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.3.0
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$(go env GOPATH)/bin:$PATH"
protoc -I proto \
  --go_out=. --go_opt=module=github.com/kiln-gpu/kiln/sdk/plugin \
  --go-grpc_out=. --go-grpc_opt=module=github.com/kiln-gpu/kiln/sdk/plugin \
  proto/kilnplugin/v1/plugin.proto
