# Runner image of the decider job containers (included from the top-level Makefile).
#
#   make image                      build provenroute/runner:latest unless it is current
#   make image BASE_IMAGE=python:3.11-slim
#   make image RUNNER_IMAGE=provenroute/runner:mine
#   make image-force                rebuild regardless
#
# "Current" means the image's provenroute.image.hash label equals
# sha256("<sha256 of the files listed in container/image-inputs.txt>\n<base image id>\n"),
# so a change to the Dockerfile, the runner, a pinned agent-CLI version or a re-bootstrapped
# base triggers a rebuild. streams/docker_sandbox.py (image_input_hash / ensure_image)
# computes the same value from the same list, so tests and make agree.
#
# The agent CLIs are fetched on the host, through their registries' own clients, into the
# git-ignored container/vendor/ before the build (the build itself has no registry access):
#   - the Kilo CLI's linux-x64 platform package with `npm ci` (container/agents/package-lock.json)
#   - mini-swe-agent's pinned wheels with `pip download` (container/agents/mini-requirements.txt)
# Each is skipped when vendor/ already holds what the pinned file asks for.

DOCKER        ?= docker
BASE_IMAGE    ?= provenroute/base:bookworm
RUNNER_IMAGE  ?= provenroute/runner:latest
IMAGE_CONTEXT ?= container
NPM           ?= npm
VENDOR_PIP    ?= $(if $(wildcard $(VENV)/bin/pip),$(VENV)/bin/pip,python3 -m pip)
VENDOR        := $(IMAGE_CONTEXT)/vendor
WHEEL_PLATFORMS = --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
	--platform manylinux_2_28_x86_64 --platform manylinux_2_5_x86_64 \
	--platform manylinux1_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64

IMAGE_HASH_SH = base_id=$$($(DOCKER) image inspect -f '{{.Id}}' '$(BASE_IMAGE)' 2>/dev/null) \
	|| { echo "base image $(BASE_IMAGE) is missing (bootstrap it first)" >&2; exit 1; }; \
	files_sha=$$(grep -v '^\s*\(\#\|$$\)' $(IMAGE_CONTEXT)/image-inputs.txt \
	  | sed 's|^|$(IMAGE_CONTEXT)/|' | xargs cat | sha256sum | cut -d' ' -f1); \
	want=$$(printf '%s\n%s\n' "$$files_sha" "$$base_id" | sha256sum | cut -d' ' -f1)

.PHONY: image image-force image-hash image-vendor

image-hash:
	@$(IMAGE_HASH_SH); echo "$$want"

$(VENDOR)/kilo/.done: $(IMAGE_CONTEXT)/agents/package.json $(IMAGE_CONTEXT)/agents/package-lock.json
	@command -v $(NPM) >/dev/null || { command -v apt-get >/dev/null \
	  && apt-get install -y -q --no-install-recommends npm >/dev/null; } \
	  || { echo "npm is needed to fetch the Kilo CLI (apt-get install npm)" >&2; exit 1; }
	rm -rf $(VENDOR)/kilo && mkdir -p $(VENDOR)/kilo
	cp $(IMAGE_CONTEXT)/agents/package.json $(IMAGE_CONTEXT)/agents/package-lock.json $(VENDOR)/kilo/
	cd $(VENDOR)/kilo && $(NPM) ci --no-audit --no-fund --ignore-scripts --loglevel=error
	test -x $(VENDOR)/kilo/node_modules/@kilocode/cli-linux-x64/bin/kilo
	@touch $@

$(VENDOR)/wheels/.done: $(IMAGE_CONTEXT)/agents/mini-requirements.txt
	rm -rf $(VENDOR)/wheels && mkdir -p $(VENDOR)/wheels
	$(VENDOR_PIP) download -q --no-deps --only-binary=:all: --python-version 3.11 \
	  --implementation cp $(WHEEL_PLATFORMS) -d $(VENDOR)/wheels \
	  -r $(IMAGE_CONTEXT)/agents/mini-requirements.txt
	@touch $@

image-vendor: $(VENDOR)/kilo/.done $(VENDOR)/wheels/.done ## fetch the pinned agent CLIs on the host

image: image-vendor
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

image-force: image-vendor
	@$(IMAGE_HASH_SH); \
	DOCKER_BUILDKIT=0 $(DOCKER) build --no-cache --build-arg BASE_IMAGE='$(BASE_IMAGE)' \
	  --label provenroute.image.hash="$$want" -t '$(RUNNER_IMAGE)' $(IMAGE_CONTEXT)
