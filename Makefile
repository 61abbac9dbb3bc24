# poolkit - the one build (plain GNU make; no autotools, no cmake).
#
#   make                  release libraries in build/release/
#   make check            set up, build with gcc and clang, run the tests
#                         plain, under ASan+UBSan and under TSan
#   make install PREFIX=/usr DESTDIR=/tmp/stage
#   make help             every target
#
# One Makefile builds several flavours. MODE picks one and every object of
# that flavour lives under build/$(MODE)/, so flavours never mix:
#   release  $(CC), the user's CFLAGS: the libraries that get installed
#   asan     $(GCC) with AddressSanitizer + UndefinedBehaviorSanitizer
#   tsan     $(CLANG) with ThreadSanitizer
#   clang    $(CLANG), plain: a second compiler's warnings under -Werror
# Targets that need several flavours (check, check-*) call $(MAKE) once per
# MODE instead of teaching one make run to juggle four sets of flags.

# ---- user variables (set on the command line or in the environment) ------

# make predefines CC=cc, so `CC ?= gcc` would never apply; replace only
# make's own default, never a CC the user chose.
ifeq ($(origin CC),default)
CC = gcc
endif
GCC ?= gcc
CLANG ?= clang
AR ?= ar
PKG_CONFIG ?= pkg-config
CFLAGS ?= -O2 -g
CPPFLAGS ?=
LDFLAGS ?=
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DESTDIR ?=
MODE ?= release
V ?= 0
# Passed to bench/run.sh and to poolkit-demo.
BENCH ?=
ROUNDS ?=
DEMO_ARGS ?=
# Test-run knobs (see tests/support/run_suite.sh).
PLAIN_STRESS_SCALE ?= 1
SAN_STRESS_SCALE ?= 0.1
PK_TEST_TIMEOUT_MULT ?= 1

# ---- version: include/poolkit/version.h is the only place it is written --

VERSION_H := include/poolkit/version.h
pk_ver = $(shell awk '$$2 == "PK_VERSION_$(1)" { print $$3 }' $(VERSION_H))
MAJOR := $(call pk_ver,MAJOR)
MINOR := $(call pk_ver,MINOR)
PATCH := $(call pk_ver,PATCH)
VERSION := $(MAJOR).$(MINOR).$(PATCH)
ifneq ($(words $(MAJOR) $(MINOR) $(PATCH)),3)
$(error could not read PK_VERSION_MAJOR/MINOR/PATCH from $(VERSION_H))
endif

# ---- flavours --------------------------------------------------------------

B := build/$(MODE)
ifeq ($(MODE),release)
MCC := $(CC)
MODE_FLAGS :=
else ifeq ($(MODE),asan)
MCC := $(GCC)
MODE_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all \
              -fno-omit-frame-pointer
else ifeq ($(MODE),tsan)
MCC := $(CLANG)
MODE_FLAGS := -fsanitize=thread
else ifeq ($(MODE),clang)
MCC := $(CLANG)
MODE_FLAGS :=
else
$(error MODE must be release, asan, tsan or clang (got '$(MODE)'))
endif

# What poolkit needs, appended after the user's CFLAGS so that
# `make CFLAGS=-O0` changes optimisation but cannot drop the standard, the
# warnings or the visibility (musl's CFLAGS_ALL). Only include/ is on every
# include path; $(INC) adds a folder's own (see "include paths" below).
PK_CFLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L -pthread -fvisibility=hidden \
             -Iinclude -Wall -Wextra -Werror
ALL_CFLAGS = $(CPPFLAGS) $(CFLAGS) $(PK_CFLAGS) $(INC) $(MODE_FLAGS) \
             $(XCFLAGS) -MMD -MP
ALL_LDFLAGS = $(LDFLAGS) $(MODE_FLAGS) -pthread
# Tests (and the library compiled for them) see the fault-injecting
# allocator (PK_TESTING) and check the lock ranks (PK_LOCK_CHECK:
# lib/kit/sync.h).
TEST_CFLAGS := -DPK_TESTING -DPK_LOCK_CHECK

# ---- quiet by default, V=1 prints the commands -----------------------------

ifeq ($(V),1)
Q :=
say =
else
Q := @
say = @printf '  %-8s %s\n' '$(1)' '$(2)'
endif
MAKEFLAGS += --no-print-directory
.DEFAULT_GOAL := all
.SUFFIXES:
.DELETE_ON_ERROR:
# Objects reached only through pattern rules would count as intermediate
# and be deleted after linking; keep them so rebuilds stay incremental.
.SECONDARY:

# ---- sources ---------------------------------------------------------------

LIB_SRCS ?= $(wildcard lib/*/*.c pools/*/*.c)
TEST_SRCS := $(wildcard tests/unit/test_*.c tests/stress/stress_*.c)
SUPPORT_SRCS := $(wildcard tests/support/*.c)
# examples/demo_*.c hold poolkit-demo's rows: linked into it, not programs.
EXAMPLE_SRCS := $(filter-out examples/poolkit-demo.c examples/demo_%.c,$(wildcard examples/*.c))
DEMO_SRC := $(wildcard examples/poolkit-demo.c)
DEMO_ROW_SRCS := $(wildcard examples/demo_*.c)
# bench/bench_<adapter>.c (bench_pg.c) are built only with their adapter
# (see "adapters" below); the other bench/bench_*.c always.
BENCH_ALL_MAINS := $(wildcard bench/bench_*.c)
BENCH_ADAPTER_MAINS := $(wildcard $(foreach a,pg http,bench/bench_$(a).c)) # = ADAPTERS, below
BENCH_MAINS := $(filter-out $(BENCH_ADAPTER_MAINS),$(BENCH_ALL_MAINS))
BENCH_HELPERS := $(filter-out $(BENCH_ALL_MAINS),$(wildcard bench/*.c))

# ---- include paths, per folder -----------------------------------------
# lib/pool/, lib/exec/ and lib/kit/ include each other by relative path
# ("../kit/sync.h") and need no -I. A module (pools/*, adapters/*) sees
# include/ and lib/exec/, for executor_int.h, the one internal header meant
# for it. Tests and their helpers may look inside: every lib/ folder and
# tests/support/. tests/support/check_layout.sh checks who includes what.
MODULE_INC := -Ilib/exec
TEST_INC := -Ilib/kit -Ilib/exec -Ilib/pool -Itests/support
$(foreach k,obj pic tobj,$(foreach d,pools adapters,\
  $(eval $(B)/$(k)/$(d)/%.o: INC := $(MODULE_INC))))
$(foreach k,obj tobj,$(eval $(B)/$(k)/tests/%.o: INC := $(TEST_INC)))

# Three object kinds, kept apart like musl's .o/.lo:
#   obj/   static library, examples, bench, demo
#   pic/   the shared library (-fPIC)
#   tobj/  the test archive and the tests (-DPK_TESTING)
obj = $(patsubst %.c,$(B)/obj/%.o,$(1))
pic = $(patsubst %.c,$(B)/pic/%.o,$(1))
tobj = $(patsubst %.c,$(B)/tobj/%.o,$(1))

SONAME := libpoolkit.so.$(MAJOR)
SO_REAL := libpoolkit.so.$(VERSION)
LIB_A := $(B)/libpoolkit.a
LIB_SO := $(B)/$(SO_REAL)
LIB_LINKS := $(B)/$(SONAME) $(B)/libpoolkit.so
TEST_A := $(B)/libpoolkit-test.a
TEST_BINS := $(patsubst %.c,$(B)/tests/%,$(notdir $(TEST_SRCS)))
# tests/integration/test_*.c run an adapter against a real server; each is
# built only when its adapter is (see below), into the same $(B)/tests/.
INTEG_SRCS := $(wildcard tests/integration/test_*.c)
EXAMPLE_BINS := $(patsubst examples/%.c,$(B)/examples/%,$(EXAMPLE_SRCS))
BENCH_BINS := $(patsubst bench/%.c,$(B)/bench/%,$(BENCH_MAINS))
DEMO_BIN := $(if $(DEMO_SRC),$(B)/poolkit-demo)

# ---- adapters: libpoolkit-pg (libpq), libpoolkit-http (libcurl) ------------
# An adapter is built only when its sources exist and pkg-config finds the
# library it wraps; otherwise `make` says it skipped it. Core code never
# includes libpq or libcurl headers.

ADAPTERS := pg http
adapter_pkg_pg := libpq
adapter_pkg_http := libcurl openssl
adapter_srcs = $(wildcard adapters/$(1)/*.c)
adapter_found = $(shell $(PKG_CONFIG) --exists $(adapter_pkg_$(1)) && echo y)
ADAPTERS_ON := $(foreach a,$(ADAPTERS),\
                 $(if $(call adapter_srcs,$(a)),$(if $(call adapter_found,$(a)),$(a))))
ADAPTERS_OFF := $(filter-out $(ADAPTERS_ON),$(ADAPTERS))
adapter_why = $(if $(call adapter_srcs,$(1)),$(adapter_pkg_$(1)) not found by $(PKG_CONFIG),no sources in adapters/$(1)/ yet)
ADAPTER_LIBS := $(foreach a,$(ADAPTERS_ON),$(B)/libpoolkit-$(a).a \
                  $(B)/libpoolkit-$(a).so.$(VERSION) \
                  $(B)/libpoolkit-$(a).so.$(MAJOR) $(B)/libpoolkit-$(a).so)

# Per adapter: its objects compile with its library's cflags, and its
# libraries are made from its own objects (the shared one links
# libpoolkit.so, so it records libpoolkit.so.$(MAJOR) as NEEDED).
define adapter_rules
$(B)/obj/adapters/$(1)/%.o $(B)/pic/adapters/$(1)/%.o: \
    XCFLAGS := $(shell $(PKG_CONFIG) --cflags $(adapter_pkg_$(1)))
$(B)/libpoolkit-$(1).a: $(call obj,$(call adapter_srcs,$(1)))
	$$(call say,AR,$$@)
	$(Q)rm -f $$@ && $(AR) rcs $$@ $$^
$(B)/libpoolkit-$(1).so.$(VERSION): $(call pic,$(call adapter_srcs,$(1))) $(LIB_SO)
	$$(call say,LD,$$@)
	$(Q)$$(MCC) -shared -Wl,-soname,libpoolkit-$(1).so.$(MAJOR) -Wl,-z,defs \
	    -o $$@ $$^ $$(ALL_LDFLAGS) $(shell $(PKG_CONFIG) --libs $(adapter_pkg_$(1)))
$(B)/libpoolkit-$(1).so.$(MAJOR): $(B)/libpoolkit-$(1).so.$(VERSION)
	$(Q)ln -sf libpoolkit-$(1).so.$(VERSION) $$@
$(B)/libpoolkit-$(1).so: $(B)/libpoolkit-$(1).so.$(MAJOR)
	$(Q)ln -sf libpoolkit-$(1).so.$(MAJOR) $$@
endef
$(foreach a,$(ADAPTERS_ON),$(eval $(call adapter_rules,$(a))))

# Integration tests: tests/integration/test_<adapter>*.c links the test
# archive, that adapter's static library and the library it wraps, and is
# built only when the adapter is.
integ_adapter = $(firstword $(foreach a,$(ADAPTERS),$(if $(filter test_$(a) test_$(a)_%,$(1)),$(a))))
INTEG_BINS := $(foreach f,$(INTEG_SRCS),$(if $(filter $(ADAPTERS_ON),$(call integ_adapter,$(basename $(notdir $(f))))),$(B)/tests/$(basename $(notdir $(f)))))
define integ_rules
$(B)/tobj/tests/integration/$(1).o: XCFLAGS := $(shell $(PKG_CONFIG) --cflags $(adapter_pkg_$(2)))
$(B)/tests/$(1): $(B)/tobj/tests/integration/$(1).o $(call tobj,$(SUPPORT_SRCS)) $(B)/libpoolkit-$(2).a $(TEST_A)
	$$(call say,LD,$$@)
	@mkdir -p $$(@D)
	$(Q)$$(MCC) -o $$@ $$^ $$(ALL_LDFLAGS) $$(TEST_LIBS) $(shell $(PKG_CONFIG) --libs $(adapter_pkg_$(2)))
endef
$(foreach f,$(INTEG_SRCS),$(if $(filter $(ADAPTERS_ON),$(call integ_adapter,$(basename $(notdir $(f))))),\
  $(eval $(call integ_rules,$(basename $(notdir $(f))),$(call integ_adapter,$(basename $(notdir $(f))))))))

# ---- programs that use an adapter: the demo's pg and http rows,
# examples/pg_*.c and examples/http_*.c
# With the pg adapter, examples/demo_pg.c is compiled with -DPK_DEMO_PG
# and libpq's cflags, and poolkit-demo links libpoolkit-pg.a, libpq and the
# throwaway-cluster helper (examples/support/); examples/pg_*.c build
# likewise. The http adapter does the same for examples/demo_http.c
# (-DPK_DEMO_HTTP), examples/http_*.c and the throwaway-nginx helper,
# with libpoolkit-http.a and libcurl + OpenSSL. Without its adapter, a
# demo_<adapter>.c compiles to rows that say skipped and why, and its
# examples are not built. The examples link libpoolkit.a too (the thread
# pool; the adapter libraries need the core).

EXAMPLE_SUPPORT := examples/support/throwaway.c
PG_ON := $(filter pg,$(ADAPTERS_ON))
PG_EXAMPLE_SRCS := $(filter examples/pg_%.c,$(EXAMPLE_SRCS))
EXAMPLE_SUPPORT_PG := $(EXAMPLE_SUPPORT) examples/support/throwaway_pg.c
ifneq ($(PG_ON),)
PG_CFLAGS := $(shell $(PKG_CONFIG) --cflags libpq)
PG_LIBS := $(shell $(PKG_CONFIG) --libs libpq)
DEMO_PG_OBJS := $(call obj,$(EXAMPLE_SUPPORT_PG)) $(B)/libpoolkit-pg.a
$(B)/obj/examples/demo_pg.o $(call obj,$(PG_EXAMPLE_SRCS)): \
    XCFLAGS := -DPK_DEMO_PG $(PG_CFLAGS)
$(B)/examples/pg_%: $(B)/obj/examples/pg_%.o $(call obj,$(EXAMPLE_SUPPORT_PG)) \
    $(B)/libpoolkit-pg.a $(LIB_A)
	$(call say,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(MCC) -o $@ $^ $(ALL_LDFLAGS) $(PG_LIBS) -lm
else
EXAMPLE_BINS := $(filter-out $(patsubst examples/%.c,$(B)/examples/%,$(PG_EXAMPLE_SRCS)),$(EXAMPLE_BINS))
endif

HTTP_ON := $(filter http,$(ADAPTERS_ON))
HTTP_EXAMPLE_SRCS := $(filter examples/http_%.c,$(EXAMPLE_SRCS))
EXAMPLE_SUPPORT_HTTP := $(EXAMPLE_SUPPORT) examples/support/throwaway_http.c
ifneq ($(HTTP_ON),)
HTTP_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(adapter_pkg_http))
HTTP_LIBS := $(shell $(PKG_CONFIG) --libs $(adapter_pkg_http))
DEMO_HTTP_OBJS := $(call obj,$(EXAMPLE_SUPPORT_HTTP)) $(B)/libpoolkit-http.a
$(B)/obj/examples/demo_http.o $(call obj,$(HTTP_EXAMPLE_SRCS)): \
    XCFLAGS := -DPK_DEMO_HTTP $(HTTP_CFLAGS)
$(B)/examples/http_%: $(B)/obj/examples/http_%.o $(call obj,$(EXAMPLE_SUPPORT_HTTP)) \
    $(B)/libpoolkit-http.a $(LIB_A)
	$(call say,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(MCC) -o $@ $^ $(ALL_LDFLAGS) $(HTTP_LIBS) -lm
else
EXAMPLE_BINS := $(filter-out $(patsubst examples/%.c,$(B)/examples/%,$(HTTP_EXAMPLE_SRCS)),$(EXAMPLE_BINS))
endif

# Installing (or removing) libpq or libcurl must rebuild demo_pg.o or
# demo_http.o: the stub rows of a build without the library must not
# outlive it. Compiling one leaves a stamp named after its adapter's
# state; when the stamp of this run's state is missing, a phony
# prerequisite forces the compile. (A stamp made by a rule would not do:
# .SECONDARY makes make skip a missing one.)
# $(1): the adapter, $(2): its library's name in the stamp, $(3): on?
define demo_stamp_rules
$(B)/obj/examples/demo_$(1).o: examples/demo_$(1).c
	$$(call say,CC,$$@)
	@mkdir -p $$(@D)
	@rm -f $(B)/obj/examples/demo_$(1).with-$(2) $(B)/obj/examples/demo_$(1).without-$(2)
	$(Q)$$(MCC) $$(ALL_CFLAGS) -c -o $$@ $$<
	@touch $(B)/obj/examples/demo_$(1).$(if $(3),with,without)-$(2)
ifeq ($$(wildcard $(B)/obj/examples/demo_$(1).$(if $(3),with,without)-$(2)),)
$(B)/obj/examples/demo_$(1).o: demo-$(1)-state-changed
endif
.PHONY: demo-$(1)-state-changed
demo-$(1)-state-changed:
	@:
endef
$(eval $(call demo_stamp_rules,pg,libpq,$(PG_ON)))
$(if $(wildcard examples/demo_http.c),$(eval $(call demo_stamp_rules,http,libcurl,$(HTTP_ON))))

# Adapter benches: bench/bench_<adapter>.c links that adapter's static
# library, libpoolkit.a and the library it wraps, and is built only when
# the adapter is (so `make everything` still works without libpq). Its
# object also sees bench/peers/ (peer_pg_common.h: the timing loops it
# shares with the C peer drivers).
define bench_adapter_rules
$(B)/obj/bench/bench_$(1).o: XCFLAGS := -Ibench $(shell $(PKG_CONFIG) --cflags $(adapter_pkg_$(1)))
$(B)/bench/bench_$(1): $(B)/obj/bench/bench_$(1).o $(call obj,$(BENCH_HELPERS)) $(B)/libpoolkit-$(1).a $(LIB_A)
	$$(call say,LD,$$@)
	@mkdir -p $$(@D)
	$(Q)$$(MCC) -o $$@ $$^ $$(ALL_LDFLAGS) -lm $(shell $(PKG_CONFIG) --libs $(adapter_pkg_$(1)))
endef
BENCH_ADAPTERS := $(foreach a,$(ADAPTERS_ON),$(if $(filter bench/bench_$(a).c,$(BENCH_ADAPTER_MAINS)),$(a)))
$(foreach a,$(BENCH_ADAPTERS),$(eval $(call bench_adapter_rules,$(a))))
BENCH_BINS += $(foreach a,$(BENCH_ADAPTERS),$(B)/bench/bench_$(a))

# ---- top-level targets -----------------------------------------------------

.PHONY: all libs tests everything examples bench bench-build demo demo-build \
        install uninstall clean help adapters-note \
        check check-build check-plain check-asan check-tsan valgrind

all: libs adapters-note

libs: $(LIB_A) $(LIB_SO) $(LIB_LINKS) $(ADAPTER_LIBS)
	@:

adapters-note:
	@$(foreach a,$(ADAPTERS_OFF),echo "  SKIP     libpoolkit-$(a): $(call adapter_why,$(a))";)

tests: $(TEST_BINS) $(INTEG_BINS) adapters-note
	@:

# Everything that compiles, without running anything: what check-build
# builds with gcc and again with clang.
everything: libs tests $(EXAMPLE_BINS) $(BENCH_BINS) $(DEMO_BIN)
	@:

examples: $(EXAMPLE_BINS)
	@$(if $(PG_ON)$(if $(PG_EXAMPLE_SRCS),,y),:,echo "  SKIP     $(notdir $(basename $(PG_EXAMPLE_SRCS))): the pg adapter is off")
	@$(if $(HTTP_ON)$(if $(HTTP_EXAMPLE_SRCS),,y),:,echo "  SKIP     $(notdir $(basename $(HTTP_EXAMPLE_SRCS))): the http adapter is off")

# ---- compiling -------------------------------------------------------------

$(B)/obj/%.o: %.c
	$(call say,CC,$@)
	@mkdir -p $(@D)
	$(Q)$(MCC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/pic/%.o: %.c
	$(call say,CC-PIC,$@)
	@mkdir -p $(@D)
	$(Q)$(MCC) $(ALL_CFLAGS) -fPIC -c -o $@ $<

$(B)/tobj/%.o: %.c
	$(call say,CC-TEST,$@)
	@mkdir -p $(@D)
	$(Q)$(MCC) $(ALL_CFLAGS) $(TEST_CFLAGS) -c -o $@ $<

# ---- libraries -------------------------------------------------------------

$(LIB_A): $(call obj,$(LIB_SRCS))
	$(call say,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

# -z defs: a symbol the library uses but does not define is a link error
# here, not a surprise in the program that loads it.
$(LIB_SO): $(call pic,$(LIB_SRCS))
	$(call say,LD,$@)
	$(Q)$(MCC) -shared -Wl,-soname,$(SONAME) -Wl,-z,defs -o $@ $^ $(ALL_LDFLAGS)

$(B)/$(SONAME): $(LIB_SO)
	$(Q)ln -sf $(SO_REAL) $@

$(B)/libpoolkit.so: $(B)/$(SONAME)
	$(Q)ln -sf $(SONAME) $@

# The test archive: the same sources built with -DPK_TESTING (the
# fault-injecting allocator). Never installed.
$(TEST_A): $(call tobj,$(LIB_SRCS))
	$(call say,AR,$@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

# ---- tests: one executable per tests/unit/test_*.c, tests/stress/stress_*.c
# Each links every tests/support/*.c helper and the test archive. The
# runner (tests/support/run_suite.sh) runs every executable in $(B)/tests/.

TEST_LIBS := -lcmocka -lm
$(B)/tests/%: $(B)/tobj/tests/unit/%.o $(call tobj,$(SUPPORT_SRCS)) $(TEST_A)
	$(call say,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(MCC) -o $@ $^ $(ALL_LDFLAGS) $(TEST_LIBS)

$(B)/tests/%: $(B)/tobj/tests/stress/%.o $(call tobj,$(SUPPORT_SRCS)) $(TEST_A)
	$(call say,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(MCC) -o $@ $^ $(ALL_LDFLAGS) $(TEST_LIBS)

# ---- examples, demo, bench: programs linked with the static library -------

$(B)/examples/%: $(B)/obj/examples/%.o $(LIB_A)
	$(call say,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(MCC) -o $@ $^ $(ALL_LDFLAGS) -lm

$(B)/poolkit-demo: $(B)/obj/examples/poolkit-demo.o $(call obj,$(DEMO_ROW_SRCS)) \
    $(DEMO_PG_OBJS) $(DEMO_HTTP_OBJS) $(LIB_A)
	$(call say,LD,$@)
	$(Q)$(MCC) -o $@ $^ $(ALL_LDFLAGS) $(PG_LIBS) $(HTTP_LIBS) -lm

# bench/bench_*.c are programs; any other bench/*.c is a helper linked into
# each. bench/peers/ (peer drivers) is built by bench/run.sh
# (bench/peers/build.sh), not here.
$(B)/obj/bench/%.o: XCFLAGS := -Ibench
$(B)/bench/%: $(B)/obj/bench/%.o $(call obj,$(BENCH_HELPERS)) $(LIB_A)
	$(call say,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(MCC) -o $@ $^ $(ALL_LDFLAGS) -lm

demo-build: $(DEMO_BIN)
	@test -n "$(DEMO_SRC)" || { echo "make demo: examples/poolkit-demo.c does not exist yet" >&2; exit 1; }

demo:
	@bash scripts/setup.sh demo
	@$(MAKE) -j2 MODE=release demo-build
	build/release/poolkit-demo $(DEMO_ARGS)

bench-build: $(BENCH_BINS)
	@:

bench:
	@test -f bench/run.sh || { echo "make bench: bench/run.sh is missing; it comes with the bench programs" >&2; exit 1; }
	@$(MAKE) -j2 MODE=release bench-build
	$(if $(BENCH),BENCH='$(BENCH)') $(if $(ROUNDS),ROUNDS='$(ROUNDS)') bash bench/run.sh build/release/bench

# ---- install ---------------------------------------------------------------
# Headers, both libraries with their symlinks, and a .pc file per library.
# The .pc files are written at install time so they carry PREFIX/LIBDIR.

INSTALL_LIBS := libpoolkit $(foreach a,$(ADAPTERS_ON),libpoolkit-$(a))
D_LIB := $(DESTDIR)$(LIBDIR)
D_INC := $(DESTDIR)$(INCLUDEDIR)/poolkit
D_PC := $(DESTDIR)$(LIBDIR)/pkgconfig

# The .pc's paths under $(PREFIX) are written relative to ${prefix}, so
# that `pkg-config --define-prefix` finds a staged copy (README).
pc_rel = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))
# $(1): .pc name, $(2): description, $(3): -l name, $(4): extra lines
define write_pc
$(Q)printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(call pc_rel,$(LIBDIR))' \
	    'includedir=$(call pc_rel,$(INCLUDEDIR))' '' 'Name: $(1)' 'Description: $(2)' \
	    'Version: $(VERSION)' 'Libs: -L$${libdir} -l$(3)' \
	    'Cflags: -I$${includedir}' $(4) > $(D_PC)/$(1).pc
endef

install: libs
	$(call say,INSTALL,$(DESTDIR)$(PREFIX))
	$(Q)mkdir -p $(D_INC) $(D_LIB) $(D_PC)
	$(Q)install -m 644 include/poolkit/*.h $(D_INC)/
	$(Q)for l in $(INSTALL_LIBS); do \
	    install -m 644 $(B)/$$l.a $(D_LIB)/ && \
	    install -m 755 $(B)/$$l.so.$(VERSION) $(D_LIB)/ && \
	    ln -sf $$l.so.$(VERSION) $(D_LIB)/$$l.so.$(MAJOR) && \
	    ln -sf $$l.so.$(MAJOR) $(D_LIB)/$$l.so || exit 1; \
	done
	$(call write_pc,poolkit,C11 pooling library: resource pool core and pools,poolkit,'Libs.private: -pthread')
	$(if $(filter pg,$(ADAPTERS_ON)),$(call write_pc,poolkit-pg,poolkit PostgreSQL pool,poolkit-pg,'Requires: poolkit' 'Requires.private: libpq'))
	$(if $(filter http,$(ADAPTERS_ON)),$(call write_pc,poolkit-http,poolkit HTTP connection pool,poolkit-http,'Requires: poolkit' 'Requires.private: libcurl openssl'))

# Removes what install put there, whichever adapters this machine builds.
uninstall:
	$(call say,RM,$(DESTDIR)$(PREFIX))
	$(Q)for l in libpoolkit $(foreach a,$(ADAPTERS),libpoolkit-$(a)); do \
	    rm -f $(D_LIB)/$$l.a $(D_LIB)/$$l.so $(D_LIB)/$$l.so.$(MAJOR) \
	          $(D_LIB)/$$l.so.$(VERSION); \
	done
	$(Q)rm -f $(D_PC)/poolkit.pc $(foreach a,$(ADAPTERS),$(D_PC)/poolkit-$(a).pc)
	$(Q)rm -f $(addprefix $(D_INC)/,$(notdir $(wildcard include/poolkit/*.h)))
	$(Q)rmdir $(D_INC) 2>/dev/null || true

clean:
	rm -rf build

# ---- checks ----------------------------------------------------------------
# make check: set up the machine, build everything under gcc and clang with
# -Werror, run the build checks, then run the suite in all three modes. A
# failing mode does not stop the others, so one run shows every failure;
# make check fails at the end if any failed.

# setup.sh installs PostgreSQL and libpq-dev, nginx and libcurl with
# OpenSSL, so here the integration tests must run: PK_PG_REQUIRED=1 and
# PK_HTTP_REQUIRED=1 turn their skips into failures.
check:
	@bash scripts/setup.sh check
	@$(PKG_CONFIG) --exists libpq || { echo "make check: libpq not found by $(PKG_CONFIG): the pg tests cannot run"; exit 1; }
	@$(PKG_CONFIG) --exists $(adapter_pkg_http) || { echo "make check: $(adapter_pkg_http) not found by $(PKG_CONFIG): the http tests cannot run"; exit 1; }
	@$(MAKE) check-build
	@failed=; for m in plain asan tsan; do \
	    PK_PG_REQUIRED=1 PK_HTTP_REQUIRED=1 $(MAKE) check-$$m || failed="$$failed $$m"; \
	done; \
	if [ -n "$$failed" ]; then echo "make check: FAILED in:$$failed"; exit 1; fi; \
	echo "make check: all modes passed"

# Compile everything with gcc and clang, then: each public header compiles
# alone; each folder includes only what it may and no two files of a folder
# call each other (from nm of the gcc objects); the .so exports only
# declared pk_ symbols; an installed poolkit works through pkg-config,
# shared and static.
check-build:
	@echo "== build: gcc (build/release)"
	@$(MAKE) -j2 MODE=release everything
	@echo "== build: clang (build/clang)"
	@$(MAKE) -j2 MODE=clang everything
	@bash tests/support/check_headers.sh
	@bash tests/support/check_layout.sh build/release
	@bash tests/support/check_symbols.sh build/release/$(SO_REAL)
	@$(foreach a,$(ADAPTERS_ON),bash tests/support/check_symbols.sh build/release/libpoolkit-$(a).so.$(VERSION) &&) true
	@MAKE='$(MAKE)' bash tests/support/check_install.sh
	@CC='$(CC)' bash tests/support/check_readme.sh build/release

# Sanitizer options: stop at the first error, with a stack; leaks fail the
# run. A tests/support/tsan.supp, if someone adds one, is used (each entry
# must say why the race is benign).
ASAN_OPTIONS ?= halt_on_error=1:abort_on_error=0:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1
UBSAN_OPTIONS ?= halt_on_error=1:print_stacktrace=1
TSAN_SUPP := $(wildcard tests/support/tsan.supp)
TSAN_OPTIONS ?= die_after_fork=0:halt_on_error=1:second_deadlock_stack=1$(if $(TSAN_SUPP),:suppressions=$(abspath $(TSAN_SUPP)))
RUN_SUITE := bash tests/support/run_suite.sh

check-plain:
	@$(MAKE) -j2 MODE=release tests
	@PK_STRESS_SCALE=$(PLAIN_STRESS_SCALE) PK_TEST_TIMEOUT_MULT=$(PK_TEST_TIMEOUT_MULT) \
	    $(RUN_SUITE) build/release plain

check-asan:
	@$(MAKE) -j2 MODE=asan tests
	@PK_STRESS_SCALE=$(SAN_STRESS_SCALE) PK_TEST_TIMEOUT_MULT=$(PK_TEST_TIMEOUT_MULT) \
	    ASAN_OPTIONS='$(ASAN_OPTIONS)' UBSAN_OPTIONS='$(UBSAN_OPTIONS)' \
	    $(RUN_SUITE) build/asan asan

# clang 14's TSan aborts ("unexpected memory mapping") on kernels that
# randomise mmap with more bits than it knows; running with ASLR off
# (setarch -R) avoids that, so use it wherever the container allows it.
TSAN_WRAPPER = $(shell setarch $$(uname -m) -R true 2>/dev/null && echo "setarch $$(uname -m) -R")
check-tsan:
	@$(MAKE) -j2 MODE=tsan tests
	@PK_STRESS_SCALE=$(SAN_STRESS_SCALE) PK_TEST_TIMEOUT_MULT=$(PK_TEST_TIMEOUT_MULT) \
	    TSAN_OPTIONS='$(TSAN_OPTIONS)' PK_TEST_WRAPPER='$(TSAN_WRAPPER)' \
	    $(RUN_SUITE) build/tsan tsan

# Leak hunting on the release test binaries (slow: fewer stress ops, more
# time).
valgrind:
	@bash scripts/setup.sh valgrind
	@$(MAKE) -j2 MODE=release tests
	@PK_STRESS_SCALE=$(SAN_STRESS_SCALE) PK_TEST_TIMEOUT_MULT=$(PK_TEST_TIMEOUT_MULT) \
	    PK_TEST_TIMEOUT_BASE=1200 \
	    PK_TEST_WRAPPER='valgrind -q --leak-check=full --error-exitcode=1' \
	    $(RUN_SUITE) build/release valgrind

help:
	@echo "make [all]        build/release/libpoolkit.a and libpoolkit.so.$(VERSION) (+ adapters when possible)"
	@echo "make check        setup, check-build, then the suite plain, ASan+UBSan, TSan"
	@echo "make check-build  gcc + clang builds of everything, header/layout/symbol/install checks"
	@echo "make check-plain | check-asan | check-tsan   one mode of the suite"
	@echo "make valgrind     release test binaries under valgrind"
	@echo "make tests        build the test binaries of MODE=$(MODE) into $(B)/tests/"
	@echo "make examples     build examples/*.c into $(B)/examples/"
	@echo "make demo         set up, build and run poolkit-demo (DEMO_ARGS=...)"
	@echo "make bench        build bench/bench_*.c and run bench/run.sh (BENCH=..., ROUNDS=...)"
	@echo "make install | uninstall   PREFIX=$(PREFIX) LIBDIR=$(LIBDIR) DESTDIR=..."
	@echo "make clean        remove build/"
	@echo "variables: CC CFLAGS CPPFLAGS LDFLAGS GCC CLANG MODE=release|asan|tsan|clang V=1 PK_TEST_TIMEOUT_MULT"

-include $(shell find $(B) -name '*.d' 2>/dev/null)
