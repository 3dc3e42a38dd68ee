/* test_engine_oom.c — out of memory through the core C API, SQLite-style:
 * for N = 1, 2, 3, ... the Nth allocation of a fixed scenario (create a
 * data directory, define attributes and a tag, ingest a Segment batch and
 * upsert users, count, create a crowd, export it, close) fails, until a
 * run completes without reaching N. Every run must end in CP_OK (the
 * failure was absorbed) or CP_ENOMEM from the step that met it (or CP_EIO
 * with the handle "failed", the documented end of a write that failed after
 * changing memory), never a crash or another status; afterwards the directory must open with real
 * allocations, pass cp_db_check, and still hold every write that was
 * acknowledged. Under the ASan build, LeakSanitizer checks at the end of
 * each run (its own process) that nothing leaked.
 *
 * Which allocations can fail: the link wraps malloc, calloc, realloc,
 * strdup and strndup (ld --wrap, CMakeLists.txt) for the static libraries
 * of crowdpack and this file, so only calls made by crowdpack code are
 * counted, and jansson's allocations through json_set_alloc_funcs, all
 * of them, inside json_loadb and json_dumps too. Calls
 * inside liblmdb, libroaring and libc (asprintf, getline, qsort ...) are
 * not counted: those libraries are not written to survive a failed malloc
 * (CRoaring's array growth cannot report one). Only the test's own thread
 * counts, so background threads do not make the Nth allocation vary.
 *
 * A run takes about half a second (the check forks), and the scenario
 * makes about 400 allocations, so by default every 7th N is tried (under a
 * minute); CP_OOM_STEP=1 tries them all. CP_OOM_FIRST / CP_OOM_LAST /
 * CP_OOM_STEP (environment) pick a range of N, e.g. to debug one case;
 * CP_OOM_TRACE=1 prints each run, 2 also the
 * stack of the failed allocation (link with -rdynamic for names, or feed
 * the addresses to addr2line). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <execinfo.h>
#include <jansson.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cp_test.h"

/* ----------------------------------------------------- the allocator */

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static __thread int t_counting; /* set only on the test's thread */
static long g_calls, g_fail_at;
static int g_failed; /* the injected failure happened */
static int g_trace;  /* 2: print the stack of the failed allocation */

static int inject(void)
{
    if (!t_counting)
        return 0;
    if (++g_calls != g_fail_at)
        return 0;
    g_failed = 1;
    if (g_trace >= 2) {
        void *frames[32];
        int n = backtrace(frames, 32);
        backtrace_symbols_fd(frames, n, 2);
    }
    return 1;
}

void *__wrap_malloc(size_t n)
{
    return inject() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n)
{
    return inject() ? NULL : __real_calloc(k, n);
}

void *__wrap_realloc(void *p, size_t n)
{
    return inject() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    return inject() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
    return inject() ? NULL : __real_strndup(s, n);
}

/* Every jansson allocation can fail, inside the parser and printer too:
 * jansson 2.14 does not survive those on its own (json_dumps can leave a
 * key out, the parser can write past a string), so the library parses and
 * prints only through the checked functions of util.h, which turn such a
 * failure into CP_ENOMEM. The hook they install at open chains to this. */
static void *json_counted_malloc(size_t n)
{
    return inject() ? NULL : __real_malloc(n);
}

/* ------------------------------------------------------ the scenario */

typedef struct run {
    int handle_failed;   /* cp_db_health said "failed" after the step */
    const char *step;    /* the step that failed, or NULL */
    cp_status rc;        /* its status */
    char message[512];   /* its message */
    int configured;      /* acknowledged intake config */
    int ingested, crowd; /* acknowledged writes */
    uint64_t exported;   /* bytes the export wrote */
} run_t;

static int count_bytes(void *ud, const char *buf, size_t len)
{
    (void)buf;
    *(uint64_t *)ud += len;
    return 0;
}

#define STEP(name, call)                                                                           \
    do {                                                                                           \
        cp_status rc_ = (call);                                                                    \
        if (rc_ != CP_OK) {                                                                        \
            r->step = (name);                                                                      \
            r->rc = rc_;                                                                           \
            snprintf(r->message, sizeof r->message, "%s", err.message);                            \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

static const char BATCH[] =
    "{\"batch\":["
    "{\"type\":\"identify\",\"userId\":\"u1\",\"messageId\":\"m1\","
    "\"timestamp\":\"2024-01-02T00:00:00Z\",\"traits\":{\"age\":31,\"country\":\"中国\"}},"
    "{\"type\":\"identify\",\"userId\":\"u2\",\"messageId\":\"m2\","
    "\"timestamp\":\"2024-01-02T00:00:00Z\",\"traits\":{\"age\":45,\"country\":\"FR\"}},"
    "{\"type\":\"track\",\"userId\":\"u1\",\"event\":\"buy\",\"messageId\":\"m3\","
    "\"timestamp\":\"2024-01-02T00:00:00Z\",\"properties\":{\"category\":\"书\"}},"
    "{\"type\":\"track\",\"anonymousId\":\"a9\",\"event\":\"view\",\"messageId\":\"m4\","
    "\"timestamp\":\"2024-01-03T00:00:00Z\"}"
    "]}";
static const char USER[] = "{\"id\":\"u3\",\"attrs\":{\"age\":52,\"country\":\"中国\"},"
                           "\"tags\":[\"vip\"]}";

static void scenario(const char *dir, run_t *r)
{
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    cp_open_options_t o = {.size = sizeof(cp_open_options_t),
                           .flags = CP_OPEN_CREATE,
                           .map_size = 1ull << 26,
                           .threads = 1};
    const char *cfg = "{\"indexed_properties\":[\"category\"]}";
    uint64_t n = 0;
    STEP("open", cp_db_open(dir, &o, &db, &err));
    STEP("intake config", cp_intake_config_set_json(db, cfg, strlen(cfg), &err));
    r->configured = 1;
    STEP("attr age", cp_attr_define(db, "age", CP_ATTR_INT, &err));
    STEP("attr country", cp_attr_define(db, "country", CP_ATTR_STRING, &err));
    STEP("tag", cp_tag_create(db, "vip", "贵宾", NULL, &err));
    cp_ingest_result_t res = CP_INGEST_RESULT_INIT;
    cp_status rc = cp_ingest_segment(db, CP_EVENT_BATCH, BATCH, strlen(BATCH), &res, &err);
    cp_ingest_result_clear(&res);
    STEP("ingest", rc);
    STEP("upsert", cp_user_upsert_json(db, USER, strlen(USER), &err));
    r->ingested = 1;
    STEP("count", cp_count(db, "age >= 40 and country = \"中国\"", &n, &err));
    if (n != 1) {
        r->step = "count result";
        r->rc = CP_EINTERNAL;
        snprintf(r->message, sizeof r->message, "counted %llu, not 1", (unsigned long long)n);
        goto out;
    }
    STEP("crowd", cp_crowd_create(db, "older", "age >= 40", CP_CROWD_STATIC, NULL, &err));
    r->crowd = 1;
    STEP("export", cp_crowd_export(db, "older", CP_EXPORT_NDJSON, count_bytes, &r->exported, &err));
    char *json = NULL;
    STEP("crowds json", cp_crowds_json(db, &json, &err));
    cp_free(json);
out:
    if (db != NULL && r->step != NULL) {
        cp_health_t h = CP_HEALTH_INIT;
        r->handle_failed = cp_db_health(db, &h, NULL) == CP_OK && strcmp(h.reason, "failed") == 0;
    }
    cp_db_close(db, NULL);
}

/* After a run, with real allocations: the directory opens, checks clean
 * and holds what was acknowledged. Returns a problem text or NULL. */
static const char *verify(const char *dir, const run_t *r, char *why, size_t cap)
{
    if (r->step != NULL && strcmp(r->step, "open") == 0 && access(dir, F_OK) != 0)
        return NULL;
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    cp_open_options_t o = {.size = sizeof(cp_open_options_t),
                           .flags = CP_OPEN_CREATE,
                           .map_size = 1ull << 26,
                           .threads = 1};
    cp_status rc = cp_db_open(dir, &o, &db, &err);
    if (rc != CP_OK) {
        snprintf(why, cap, "reopen: %s: %s", cp_strerror(rc), err.message);
        return why;
    }
    uint64_t n = 0;
    /* Stored documents whole: a key dropped while printing them under
     * memory pressure would show here (the config, the crowd record). */
    char *doc = NULL;
    if (r->configured) {
        rc = cp_intake_config_json(db, &doc, &err);
        int whole = rc == CP_OK && strstr(doc, "\"category\"") != NULL;
        cp_free(doc);
        if (!whole) {
            snprintf(why, cap, "acknowledged intake config lost its indexed property: %s",
                     err.message);
            cp_db_close(db, NULL);
            return why;
        }
    }
    if (r->crowd) {
        rc = cp_crowd_json(db, "older", &doc, &err);
        int whole =
            rc == CP_OK && strstr(doc, "\"expression\"") != NULL && strstr(doc, "\"tree\"") != NULL;
        cp_free(doc);
        if (!whole) {
            snprintf(why, cap, "acknowledged crowd record incomplete: %s", err.message);
            cp_db_close(db, NULL);
            return why;
        }
    }
    if (r->ingested) {
        rc = cp_count(db, "age >= 40", &n, &err);
        if (rc != CP_OK || n != 2) {
            snprintf(why, cap, "acknowledged users lost: count %llu (%s)", (unsigned long long)n,
                     err.message);
            cp_db_close(db, NULL);
            return why;
        }
    }
    if (r->crowd) {
        rc = cp_count(db, "crowd:older", &n, &err);
        if (rc != CP_OK || n != 2) {
            snprintf(why, cap, "acknowledged crowd lost: %s", err.message);
            cp_db_close(db, NULL);
            return why;
        }
    }
    cp_db_close(db, NULL);
    uint64_t problems = 0;
    rc = cp_db_check(dir, NULL, NULL, &problems, &err);
    if (rc != CP_OK || problems != 0) {
        snprintf(why, cap, "check: %s, %llu problems %s", cp_strerror(rc),
                 (unsigned long long)problems, err.message);
        return why;
    }
    return NULL;
}

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : dflt;
}

/* One run in a child process, so a crash names its N and the rest go on,
 * and LeakSanitizer checks the run's own allocations at its exit. Exit
 * status: 0 fine, 2 the run completed without reaching N, 1 a failure. */
static int run_child(long fail_at, int trace)
{
    char dir[256];
    test_tmpdir(dir, sizeof dir, "oom");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        json_set_alloc_funcs(json_counted_malloc, free);
        run_t r = {0};
        g_calls = 0;
        g_fail_at = fail_at;
        g_failed = 0;
        t_counting = 1;
        scenario(dir, &r);
        t_counting = 0;
        long calls = g_calls;
        int code = g_failed ? 0 : 2;
        /* CP_ENOMEM, or CP_EIO from a write that failed after changing
         * memory: the handle is then "failed" and must be reopened
         * (cp_db_health), which the verification below does. */
        int documented = r.rc == CP_ENOMEM || (r.rc == CP_EIO && r.handle_failed);
        if (r.step != NULL && !(g_failed && documented)) {
            fprintf(stderr, "N=%ld: step \"%s\" returned %s (%s)%s\n", fail_at, r.step,
                    cp_strerror(r.rc), r.message,
                    g_failed ? " for a failed allocation: not CP_ENOMEM" : " with no failure");
            code = 1;
        }
        char why[700];
        if (code != 1 && verify(dir, &r, why, sizeof why) != NULL) {
            fprintf(stderr, "N=%ld (failed in %s): %s\n", fail_at, r.step ? r.step : "no step",
                    why);
            code = 1;
        }
        if (trace)
            fprintf(stderr, "N=%ld: %ld allocations, %s %s\n", fail_at, calls,
                    r.step ? r.step : "completed", r.step ? cp_strerror(r.rc) : "");
        test_rmtree(dir);
        exit(code); /* exit, not _exit: LeakSanitizer runs at exit */
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    test_rmtree(dir);
    if (WIFSIGNALED(st)) {
        fprintf(stderr, "N=%ld: killed by signal %d\n", fail_at, WTERMSIG(st));
        return 1;
    }
    return WEXITSTATUS(st) == 2 ? 2 : WEXITSTATUS(st) != 0;
}

static void test_every_allocation_fails_once(void **state)
{
    (void)state;
    long first = env_long("CP_OOM_FIRST", 1), last = env_long("CP_OOM_LAST", 1000000),
         step = env_long("CP_OOM_STEP", 7);
    int trace = (int)env_long("CP_OOM_TRACE", 0);
    g_trace = trace;
    void *warm[1];
    (void)backtrace(warm, 1); /* loads libgcc now, not inside a failing malloc */
    long failures = 0, runs = 0, n;
    for (n = first; n <= last; n += step > 0 ? step : 1) {
        int rc = run_child(n, trace);
        runs++;
        if (rc == 2)
            break;
        failures += rc;
    }
    fprintf(stderr, "oom: %ld runs (N = %ld..%ld), %ld failed\n", runs, first, n, failures);
    assert_int_equal(failures, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_allocation_fails_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
