# crowdpack — the two README commands are `make demo` and `make check`.
# `make` alone builds build/crowdpack.

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD ?= build
DEMO_DATA ?= demo-data
DEMO_USERS ?= 1000000
LISTEN ?= 127.0.0.1:8080
FUZZ_SECONDS ?= 15
FUZZ_TARGETS = $(basename $(notdir $(wildcard tests/fuzz/fuzz_*.c)))

.PHONY: all build deps demo check test asan fuzz bench bench-peers clean format format-check \
	install release-build clang-build

all: build

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

deps:
	@./scripts/install-deps.sh

# Installs what is missing, builds, writes a demo population and serves it.
demo: deps build
	@if [ -f $(DEMO_DATA)/data.mdb ]; then \
		echo "demo: reusing $(DEMO_DATA) (rm -rf $(DEMO_DATA) for a fresh population)"; \
	else \
		$(BUILD)/crowdpack demo --data $(DEMO_DATA) --users $(DEMO_USERS); \
	fi
	@BUILD=$(BUILD) ./scripts/demo-banner.sh $(LISTEN) $(DEMO_DATA)
	$(BUILD)/crowdpack serve --data $(DEMO_DATA) --listen $(LISTEN)

# Installs what is missing, builds, and runs every test: unit, property,
# integration and examples; again under ASan+UBSan; then the fuzzers briefly.
# Also compiles (without running the tests again) a Release (-O3) and a
# clang RelWithDebInfo build, both -Werror: optimisers warn differently.
check: deps format-check build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@$(MAKE) --no-print-directory release-build
	@$(MAKE) --no-print-directory clang-build
	@$(MAKE) --no-print-directory asan
	@$(MAKE) --no-print-directory fuzz

# Installs build/'s crowdpack, libcrowdpack.so, crowdpack.h and crowdpack.pc
# under PREFIX (README.md, "Embedding").
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# Everything, tests included, compiled -O3 -Werror (cc, gcc on Debian) into build-release.
release-build:
	@cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build build-release -j $(JOBS)

# Everything compiled with clang -O2 -Werror into build-clang (the fuzz step
# covers clang Debug).
clang-build:
	@if command -v clang >/dev/null 2>&1; then \
		cmake -S . -B build-clang -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null && \
		cmake --build build-clang -j $(JOBS); \
	else echo "clang-build: clang not installed, skipped"; fi

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

asan:
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCP_SANITIZE=ON >/dev/null
	@cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j $(JOBS)

fuzz:
	@if command -v clang >/dev/null 2>&1; then \
		cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DCP_FUZZ=ON >/dev/null && \
		cmake --build build-fuzz -j $(JOBS) --target $(FUZZ_TARGETS) && \
		./scripts/run-fuzzers.sh build-fuzz $(FUZZ_SECONDS); \
	else echo "fuzz: clang not installed, fuzz targets skipped"; fi

bench: deps build
	$(BUILD)/crowdpack bench

# crowdpack side by side with Redis, PostgreSQL, SQLite and the floor
# (docs/benchmarks-peers.md); installs the peers from Debian.
bench-peers: deps build
	./scripts/install-deps.sh --bench
	bench/peers/run.sh --build-dir $(BUILD)

# The C sources in .clang-format's style (clang-format 14, Debian's).
FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
CLANG_FORMAT ?= $(shell command -v clang-format-14 || command -v clang-format)

format:
	@$(CLANG_FORMAT) -i $(FORMAT_FILES)

format-check: deps
	@if [ -z "$(CLANG_FORMAT)" ]; then echo "format-check: clang-format not installed" >&2; exit 1; fi
	@bad=$$($(CLANG_FORMAT) --dry-run $(FORMAT_FILES) 2>&1 | sed -n 's/^\([^:]*\):[0-9]*:[0-9]*: warning: code should be clang-formatted.*/\1/p' | sort -u); \
	if [ -n "$$bad" ]; then echo "format-check: not formatted (run make format):" $$bad >&2; exit 1; fi

clean:
	rm -rf $(BUILD) build-asan build-fuzz build-release build-clang
