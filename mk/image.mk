# Runner image of the decider job containers (included from the top-level Makefile).
#
#   make image                      build provenroute/runner:latest unless it is current
#   make image BASE_IMAGE=python:3.11-slim
#   make image-force                rebuild regardless
#
# "Current" means the image's provenroute.image.hash label equals
# sha256("<sha256 of Dockerfile+runner.py>\n<base image id>\n"), so a change to either
# file or a re-bootstrapped base triggers a rebuild. streams/docker_sandbox.py
# (image_input_hash / ensure_image) computes the same value, so tests and make agree.

DOCKER        ?= docker
BASE_IMAGE    ?= provenroute/base:bookworm
RUNNER_IMAGE  ?= provenroute/runner:latest
IMAGE_CONTEXT ?= container

IMAGE_HASH_SH = base_id=$$($(DOCKER) image inspect -f '{{.Id}}' '$(BASE_IMAGE)' 2>/dev/null) \
	|| { echo "base image $(BASE_IMAGE) is missing (bootstrap it first)" >&2; exit 1; }; \
	files_sha=$$(cat $(IMAGE_CONTEXT)/Dockerfile $(IMAGE_CONTEXT)/runner.py \
	  | sha256sum | cut -d' ' -f1); \
	want=$$(printf '%s\n%s\n' "$$files_sha" "$$base_id" | sha256sum | cut -d' ' -f1)

.PHONY: image image-force image-hash

image-hash:
	@$(IMAGE_HASH_SH); echo "$$want"

image:
	@$(IMAGE_HASH_SH); \
	have=$$($(DOCKER) image inspect \
	  -f '{{ index .Config.Labels "provenroute.image.hash" }}' '$(RUNNER_IMAGE)' 2>/dev/null \
	  || true); \
	if [ "$$want" = "$$have" ]; then \
	  echo "$(RUNNER_IMAGE) is current ($$want)"; \
	else \
	  echo "building $(RUNNER_IMAGE) from $(BASE_IMAGE)"; \
	  DOCKER_BUILDKIT=0 $(DOCKER) build --build-arg BASE_IMAGE='$(BASE_IMAGE)' \
	    --label provenroute.image.hash="$$want" -t '$(RUNNER_IMAGE)' $(IMAGE_CONTEXT); \
	fi

image-force:
	@$(IMAGE_HASH_SH); \
	DOCKER_BUILDKIT=0 $(DOCKER) build --no-cache --build-arg BASE_IMAGE='$(BASE_IMAGE)' \
	  --label provenroute.image.hash="$$want" -t '$(RUNNER_IMAGE)' $(IMAGE_CONTEXT)
