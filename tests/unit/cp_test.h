/* cp_test.h — what every cmocka unit test needs and should not write again:
 * a fresh temporary directory, its recursive removal, opening a data
 * directory through the public API, reading a whole file, and finding the
 * optional data that lives outside the repository (../shared/data) with one
 * SKIP line when it is missing.
 *
 * Header-only on purpose: every function is static inline, so a test that
 * does not call test_open_db() need not link the engine (tests of the util,
 * store or bitmap layers include this header too). Include it after
 * <cmocka.h>; it fails the running test with fail_msg() on any error of its
 * own (a full disk, a missing $TMPDIR), so callers need no checks. */
#ifndef CP_TEST_H
#define CP_TEST_H

#include <errno.h>
#include <ftw.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crowdpack.h"

/* Creates a new, empty directory "$TMPDIR/<program>-<tag>-XXXXXX" (TMPDIR
 * defaults to /tmp) with mkdtemp(3) and writes its path to buf. A unique
 * name per call, so tests running in parallel, or the same test twice, never
 * share a directory. The caller removes it with test_rmtree(). */
static inline void test_tmpdir(char *buf, size_t cap, const char *tag)
{
    const char *root = getenv("TMPDIR");
    if (root == NULL || root[0] == '\0')
        root = "/tmp";
    int n = snprintf(buf, cap, "%s/%s-%s-XXXXXX", root, program_invocation_short_name, tag);
    if (n < 0 || (size_t)n >= cap)
        fail_msg("test_tmpdir: the path under %s does not fit in %zu bytes", root, cap);
    if (mkdtemp(buf) == NULL)
        fail_msg("test_tmpdir: mkdtemp %s: %s", buf, strerror(errno));
}

static inline int test_rmtree_one(const char *path, const struct stat *st, int flag,
                                  struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT) {
        fprintf(stderr, "test_rmtree: remove %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Removes path and everything under it, depth first, without following
 * symbolic links (nftw(3) with FTW_DEPTH | FTW_PHYS), instead of running
 * "rm -rf" through a shell. A path that does not exist is not an error. */
static inline void test_rmtree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0 && errno == ENOENT)
        return;
    if (nftw(path, test_rmtree_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fail_msg("test_rmtree: %s could not be removed", path);
}

/* A small file system for full-disk tests: a temporary directory `root`
 * with a tmpfs of `size` ("16m") mounted at root/mnt (written to mnt).
 * Needs root: otherwise, or when the mount fails, root[0] is '\0' and the
 * test skips. test_tmpfs_free() unmounts and removes it. */
static inline void test_tmpfs(char *root, size_t rcap, char *mnt, size_t mcap, const char *tag,
                              const char *size)
{
    char opts[64];
    root[0] = '\0';
    if (geteuid() != 0)
        return;
    test_tmpdir(root, rcap, tag);
    snprintf(mnt, mcap, "%s/mnt", root);
    snprintf(opts, sizeof opts, "size=%s", size);
    mkdir(mnt, 0755);
    if (mount("tmpfs", mnt, "tmpfs", 0, opts) != 0) {
        rmdir(mnt);
        rmdir(root);
        root[0] = '\0';
    }
}

static inline void test_tmpfs_free(char *root, const char *mnt)
{
    if (root[0] == '\0')
        return;
    umount(mnt);
    test_rmtree(root);
    root[0] = '\0';
}

/* Opens (or with CP_OPEN_CREATE creates) the data directory dir with the
 * options o, failing the test with the status and message if it does not
 * open. The caller closes the handle with cp_db_close(). */
static inline cp_db_t *test_open_db(const char *dir, const cp_open_options_t *o)
{
    cp_db_t *db = NULL;
    cp_error_t err = {0};
    cp_status rc = cp_db_open(dir, o, &db, &err);
    if (rc != CP_OK)
        fail_msg("open %s: %s: %s", dir, cp_strerror(rc), err.message);
    return db;
}

/* Reads the whole file at path into a NUL-terminated buffer (the NUL not
 * counted in *len, which may be NULL). The caller frees it with free(). */
static inline char *test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("test_read_file: %s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 4096) {
            cap = cap ? cap * 2 : 65536;
            char *p = realloc(buf, cap + 1);
            if (p == NULL) {
                fclose(f);
                free(buf);
                fail_msg("test_read_file: %s: out of memory", path);
            }
            buf = p;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        fail_msg("test_read_file: %s: read error", path);
    }
    buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return buf;
}

/* The data shared by several projects lives beside the repository, in
 * ../shared/data (where CI places it), not inside it: a fresh clone runs
 * without it. test_shared_data() writes the path of ../shared/data/<rel> to
 * out and returns 1 if it exists; otherwise it prints ONE line
 *   SKIP: <test>: shared data <rel> not found at <path> (...)
 * and returns 0, and the caller skips just the cases that need it:
 *     if (!test_shared_data("segment-events", dir, sizeof dir))
 *         skip();
 * The repository root is found from this header's own path (__FILE__), as
 * the build compiles the tests from the source tree. */
static inline int test_shared_data(const char *rel, char *out, size_t cap)
{
    char here[1024];
    snprintf(here, sizeof here, "%s", __FILE__); /* <repo>/tests/unit/cp_test.h */
    int n = snprintf(out, cap, "%s/../../../shared/data/%s", dirname(here), rel);
    if (n < 0 || (size_t)n >= cap)
        fail_msg("test_shared_data: the path of %s does not fit in %zu bytes", rel, cap);
    if (access(out, R_OK) == 0)
        return 1;
    fprintf(stderr,
            "SKIP: %s: shared data %s not found at %s (kept beside the repository in "
            "../shared/data, not in it); the cases that need it are skipped\n",
            program_invocation_short_name, rel, out);
    return 0;
}

#endif
