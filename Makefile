# tinyseek: two commands on a fresh machine.
#   make run    installs what is missing, builds, runs configs/tiny_v3.yaml (tiny DeepSeek-V3 vs dense)
#   make test   installs what is missing, builds, runs every test (ctest: gtest + pytest)
BUILD ?= build
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)
export CCACHE_DIR ?= $(HOME)/.cache/tinyseek-ccache
export CCACHE_BASEDIR = $(CURDIR)
export CCACHE_SLOPPINESS = pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_MAXSIZE = 5G

.PHONY: all setup configure build run test bench gpu-check pip-check clean
all: build

setup:
	@scripts/setup.sh

$(BUILD)/build.ninja: | setup
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

configure: setup $(BUILD)/build.ninja

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/tinyseek run configs/tiny_v3.yaml

test: build
	cd $(BUILD) && ctest --output-on-failure --verbose --timeout 1500

bench: build
	$(BUILD)/tinyseek_bench

gpu-check:
	scripts/gpu-check.sh

# `pip install --no-build-isolation` of a clean copy into a fresh venv, then the installed package
# and command tested from another folder (scripts/pip-check.sh).
pip-check: setup
	scripts/pip-check.sh

clean:
	rm -rf $(BUILD)
