/* csv.c — the RFC 4180 state machine of csv.h over a zlib, whole-file
 * libdeflate or memory source, with bounded record buffers and per-record
 * error recovery. */
#include <errno.h>
#include <fcntl.h>
#include <libdeflate.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zlib.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "ingest/csv.h"
#include "util/util.h"

#define IN_BUF (256u * 1024)

enum { S_START, S_UNQUOTED, S_QUOTED, S_QUOTE_SEEN, S_BAD };

struct csv_reader {
    csv_opts_t o;
    gzFile gz;
    int memsrc;      /* input is a caller's buffer (in points into it) */
    int owned;       /* ... or a whole gzip file inflated at open (ours to free) */
    uint64_t rawlen; /* that file's compressed size (for csv_raw_offset) */
    char *in;        /* input buffer */
    size_t inpos, inlen;
    int eof;
    uint64_t consumed; /* uncompressed bytes consumed */
    uint64_t line;     /* current line (1-based) */
    uint64_t rec_line; /* line the last record started on */
    uint64_t rec_end;  /* consumed at the end of the last record */
    int started;       /* BOM check done */
    int rec_closed;    /* the last record ended with a line break */
    /* Prefix hash (csv_hash_start): hs has absorbed bytes [0, hashed); the
     * bytes [hashed, hashed + pendlen) that a refill took out of `in` wait
     * in pend, and in[0] is byte hashed + pendlen. */
    XXH3_state_t *hs;
    uint64_t hashed;
    char *pend;
    size_t pendlen, pendcap;
    /* the record */
    char *rec; /* field bytes, each NUL-terminated */
    size_t reclen, reccap;
    size_t *starts; /* field start offsets in rec */
    csv_field_t *fields;
    size_t nfields, capfields;
};

static cp_status reader_new(const csv_opts_t *o, csv_reader_t **out)
{
    csv_reader_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return CP_ENOMEM;
    if (o)
        r->o = *o;
    if (r->o.delim == 0)
        r->o.delim = ',';
    if (r->o.max_field == 0)
        r->o.max_field = CSV_DEFAULT_MAX_FIELD;
    if (r->o.max_record == 0)
        r->o.max_record = CSV_DEFAULT_MAX_RECORD;
    if (r->o.max_fields == 0)
        r->o.max_fields = CSV_DEFAULT_MAX_FIELDS;
    r->line = 1;
    *out = r;
    return CP_OK;
}

/*
 * A gzip file of moderate size is inflated whole at open with libdeflate,
 * about twice as fast as zlib's streaming inflate (which takes an eighth
 * of an Online Retail import). The stream holds one member or several; the
 * last member's trailer gives a first guess of the size. Anything odd — too
 * large, damaged, truncated, not gzip — returns 0 and is left to zlib's
 * stream, so a damaged file fails with the same errors and texts either
 * way. Returns 1 when r->in holds the whole text.
 */
/* Imports stream in bounded memory: whole inflation only below these. */
#define WHOLE_MAX_IN (16u << 20)  /* compressed bytes */
#define WHOLE_MAX_OUT (64u << 20) /* inflated bytes (Online Retail: 45 MB) */

static int inflate_whole(csv_reader_t *r, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct stat sb;
    unsigned char *in = NULL;
    char *outb = NULL;
    int ok = 0;
    struct libdeflate_decompressor *d = NULL;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 18 ||
        (uint64_t)sb.st_size > WHOLE_MAX_IN)
        goto out;
    size_t inlen = (size_t)sb.st_size;
    if ((in = malloc(inlen)) == NULL)
        goto out;
    for (size_t got = 0; got < inlen;) {
        ssize_t n = read(fd, in + got, inlen - got);
        if (n <= 0)
            goto out;
        got += (size_t)n;
    }
    if (in[0] != 0x1f || in[1] != 0x8b)
        goto out;
    size_t cap = (size_t)in[inlen - 4] | (size_t)in[inlen - 3] << 8 | (size_t)in[inlen - 2] << 16 |
                 (size_t)in[inlen - 1] << 24;
    cap = cap + 1 < 4096 ? 4096 : cap + 1;
    if ((d = libdeflate_alloc_decompressor()) == NULL)
        goto out;
    size_t inpos = 0, outlen = 0, alloc = 0;
    while (inpos < inlen) {
        if (cap > WHOLE_MAX_OUT)
            goto out;
        if (alloc < cap) {
            char *nb = realloc(outb, cap);
            if (nb == NULL)
                goto out;
            outb = nb;
            alloc = cap;
        }
        size_t used = 0, made = 0;
        enum libdeflate_result res = libdeflate_gzip_decompress_ex(
            d, in + inpos, inlen - inpos, outb + outlen, cap - outlen, &used, &made);
        if (res == LIBDEFLATE_INSUFFICIENT_SPACE) {
            cap *= 2; /* several members, or past 4 GiB: try again, larger */
            continue;
        }
        if (res != LIBDEFLATE_SUCCESS || used == 0)
            goto out;
        inpos += used;
        outlen += made;
        if (outlen == cap && inpos < inlen)
            cap *= 2;
    }
    r->in = outb;
    r->inlen = outlen;
    r->memsrc = 1;
    r->owned = 1;
    r->rawlen = inlen;
    outb = NULL;
    ok = 1;
out:
    if (d)
        libdeflate_free_decompressor(d);
    free(in);
    free(outb);
    close(fd);
    return ok;
}

cp_status csv_open(const char *path, const csv_opts_t *o, csv_reader_t **out, cp_error_t *err)
{
    *out = NULL;
    csv_reader_t *r;
    if (reader_new(o, &r))
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    if (!r->o.stream && inflate_whole(r, path)) {
        *out = r;
        return CP_OK;
    }
    errno = 0;
    r->gz = gzopen(path, "rb");
    if (r->gz == NULL) {
        int e = errno;
        csv_close(r);
        if (e == ENOENT)
            return CP_ERR(err, CP_ENOTFOUND, "cannot open %s: %s", path, strerror(e));
        return CP_ERR(err, CP_EIO, "cannot open %s: %s", path, e ? strerror(e) : "zlib error");
    }
    gzbuffer(r->gz, 256u * 1024);
    r->in = malloc(IN_BUF);
    if (r->in == NULL) {
        csv_close(r);
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    }
    *out = r;
    return CP_OK;
}

cp_status csv_open_mem(const char *buf, size_t len, const csv_opts_t *o, csv_reader_t **out,
                       cp_error_t *err)
{
    *out = NULL;
    csv_reader_t *r;
    if (reader_new(o, &r))
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    r->memsrc = 1;
    r->in = (char *)(buf ? buf : "");
    r->inlen = buf ? len : 0;
    *out = r;
    return CP_OK;
}

void csv_close(csv_reader_t *r)
{
    if (r == NULL)
        return;
    if (r->gz)
        gzclose(r->gz);
    if (r->hs)
        XXH3_freeState(r->hs);
    free(r->pend);
    if (!r->memsrc || r->owned)
        free(r->in);
    free(r->rec);
    free(r->starts);
    free(r->fields);
    free(r);
}

uint64_t csv_line(const csv_reader_t *r)
{
    return r->rec_line;
}
uint64_t csv_offset(const csv_reader_t *r)
{
    return r->rec_end;
}

uint64_t csv_raw_offset(const csv_reader_t *r)
{
    if (r->gz) {
        z_off_t off = gzoffset(r->gz);
        return off > 0 ? (uint64_t)off : 0;
    }
    if (r->owned) /* the compressed position, in proportion */
        return r->inlen ? (uint64_t)((double)r->consumed / (double)r->inlen * (double)r->rawlen)
                        : r->rawlen;
    return r->consumed;
}

/* The pending bytes may hold one record in progress: a record over this is
 * rejected anyway (max_record), and skipping it moves the hash on. */
static size_t pend_cap(const csv_reader_t *r)
{
    return r->o.max_record + 2 * IN_BUF;
}

/*
 * Before a refill overwrites `in`: absorbs the bytes up to the end of the
 * last record (no digest can be asked for before it any more, csv.h) and
 * keeps the rest — the start of the record in progress — in pend.
 */
static int hash_stash(csv_reader_t *r)
{
    uint64_t base = r->consumed - r->inpos; /* offset of in[0] */
    const char *src = r->in;
    size_t n = r->inlen;
    if (r->rec_end > r->hashed) {
        uint64_t upto = r->rec_end - r->hashed; /* bytes to absorb */
        size_t fp = upto < r->pendlen ? (size_t)upto : r->pendlen;
        if (fp) { /* r->pend is NULL until something is pending */
            XXH3_128bits_update(r->hs, r->pend, fp);
            memmove(r->pend, r->pend + fp, r->pendlen - fp);
        }
        r->pendlen -= fp;
        r->hashed += fp;
        if (r->hashed < r->rec_end) {
            size_t fb = (size_t)(r->rec_end - r->hashed);
            if (fb > n)
                fb = n;
            XXH3_128bits_update(r->hs, src, fb);
            r->hashed += fb;
            src += fb;
            n -= fb;
        }
    } else {
        /* bytes of `in` not yet pending: those from hashed + pendlen on */
        size_t skip = (size_t)(r->hashed + r->pendlen - base);
        src += skip;
        n -= skip;
    }
    if (r->pendlen + n > pend_cap(r)) {
        /* an overlong line: give up digests inside it */
        XXH3_128bits_update(r->hs, r->pend, r->pendlen);
        XXH3_128bits_update(r->hs, src, n);
        r->hashed += r->pendlen + n;
        r->pendlen = 0; /* digests before `hashed` are gone (csv_hash_at says) */
        return 0;
    }
    if (r->pendlen + n > r->pendcap) {
        size_t nc = r->pendcap ? r->pendcap : 65536;
        while (nc < r->pendlen + n)
            nc *= 2;
        char *p = realloc(r->pend, nc);
        if (p == NULL)
            return -1;
        r->pend = p;
        r->pendcap = nc;
    }
    if (n)
        memcpy(r->pend + r->pendlen, src, n); /* r->pend may be NULL when n is 0 */
    r->pendlen += n;
    return 0;
}

cp_status csv_hash_start(csv_reader_t *r, const XXH3_state_t *st, cp_error_t *err)
{
    if (r->hs == NULL && (r->hs = XXH3_createState()) == NULL)
        return CP_ERR(err, CP_ENOMEM, "out of memory");
    if (st)
        XXH3_copyState(r->hs, st);
    else
        XXH3_128bits_reset(r->hs);
    r->hashed = r->consumed;
    r->pendlen = 0;
    if (!r->memsrc && r->inpos < r->inlen)
        return CP_ERR(err, CP_EINVAL, "csv_hash_start after reading");
    return CP_OK;
}

/* Absorbs the bytes [hashed, offset): from pend, then from `in`. */
static void hash_absorb(csv_reader_t *r, uint64_t offset)
{
    if (offset <= r->hashed)
        return;
    uint64_t need = offset - r->hashed;
    size_t fp = need < r->pendlen ? (size_t)need : r->pendlen;
    if (fp) { /* r->pend is NULL until something is pending */
        XXH3_128bits_update(r->hs, r->pend, fp);
        memmove(r->pend, r->pend + fp, r->pendlen - fp);
    }
    r->pendlen -= fp;
    r->hashed += fp;
    if (r->hashed < offset) {
        uint64_t base = r->consumed - r->inpos;
        XXH3_128bits_update(r->hs, r->in + (size_t)(r->hashed - base),
                            (size_t)(offset - r->hashed));
        r->hashed = offset;
    }
}

cp_status csv_hash_at(csv_reader_t *r, uint64_t offset, XXH3_state_t *out, cp_error_t *err)
{
    if (r->hs == NULL)
        return CP_ERR(err, CP_EINVAL, "csv_hash_at without csv_hash_start");
    if (offset < r->hashed || offset > r->consumed)
        return CP_ERR(err, CP_ELIMIT,
                      "cannot hash the input up to byte %llu (a line longer than %zu bytes "
                      "came before)",
                      (unsigned long long)offset, pend_cap(r));
    hash_absorb(r, offset);
    XXH3_copyState(out, r->hs);
    return CP_OK;
}

int csv_last_closed(const csv_reader_t *r)
{
    return r->rec_closed;
}

int csv_compressed(const csv_reader_t *r)
{
    return r->owned || (r->gz && !gzdirect(r->gz));
}

/* Refills the input; returns the number of new bytes, 0 at EOF, -1 on error. */
static int refill(csv_reader_t *r)
{
    if (r->memsrc) {
        r->eof = 1;
        return 0;
    }
    if (r->hs && hash_stash(r) != 0)
        return -1;
    int n = gzread(r->gz, r->in, IN_BUF);
    if (n < 0)
        return -1;
    if (n == 0) {
        /* A gzip file cut short ends like a whole one unless asked. */
        int zerr = Z_OK;
        gzerror(r->gz, &zerr);
        if (zerr == Z_BUF_ERROR)
            return -1; /* "unexpected end of file" */
    }
    r->inpos = 0;
    r->inlen = (size_t)n;
    if (n == 0)
        r->eof = 1;
    return n;
}

/* Bytes before the first a or b in p[0..n) (n if none), 8 at a time: a
 * byte equal to a or b is a zero byte of w ^ a or w ^ b, and the lowest
 * flagged byte of the has-zero test is exact (borrows only run upwards). */
static inline size_t scan2(const char *p, size_t n, char a, char b)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    const uint64_t ka = ones * (unsigned char)a, kb = ones * (unsigned char)b;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        uint64_t x = w ^ ka, y = w ^ kb;
        uint64_t t = (((x - ones) & ~x) | ((y - ones) & ~y)) & highs;
        if (t)
            return i + ((size_t)__builtin_ctzll(t) >> 3);
    }
    for (; i < n; i++)
        if (p[i] == a || p[i] == b)
            return i;
    return n;
}

static int ascii_only(const char *p, size_t n)
{
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        acc |= w;
    }
    for (; i < n; i++)
        acc |= (unsigned char)p[i];
    return (acc & 0x8080808080808080ull) == 0;
}

static int bump_rec(csv_reader_t *r, size_t need)
{
    if (r->reclen + need <= r->reccap)
        return 0;
    size_t nc = r->reccap ? r->reccap * 2 : 4096;
    while (nc < r->reclen + need)
        nc *= 2;
    char *p = realloc(r->rec, nc);
    if (p == NULL)
        return -1;
    r->rec = p;
    r->reccap = nc;
    return 0;
}

static inline int new_field(csv_reader_t *r)
{
    if (r->nfields == r->capfields) {
        size_t nc = r->capfields ? r->capfields * 2 : 32;
        size_t *s = realloc(r->starts, nc * sizeof *s);
        if (s == NULL)
            return -1;
        r->starts = s;
        csv_field_t *f = realloc(r->fields, nc * sizeof *f);
        if (f == NULL)
            return -1;
        r->fields = f;
        r->capfields = nc;
    }
    r->starts[r->nfields++] = r->reclen;
    return 0;
}

/* Room for `need` fields in r->fields (and r->starts, kept the same size). */
static int fields_room(csv_reader_t *r, size_t need)
{
    if (need <= r->capfields)
        return 0;
    size_t nc = r->capfields ? r->capfields * 2 : 32;
    while (nc < need)
        nc *= 2;
    size_t *s = realloc(r->starts, nc * sizeof *s);
    if (s == NULL)
        return -1;
    r->starts = s;
    csv_field_t *f = realloc(r->fields, nc * sizeof *f);
    if (f == NULL)
        return -1;
    r->fields = f;
    r->capfields = nc;
    return 0;
}

/*
 * 16-byte blocks for fast_record: the bit i of each mask is byte i of the
 * block. SSE2 (every x86-64) compares 16 bytes at once; other machines
 * take the same steps a byte at a time.
 */
#if defined(__SSE2__)
typedef __m128i blk_t;
static inline blk_t blk_load(const char *p)
{
    return _mm_loadu_si128((const __m128i *)p);
}
static inline unsigned blk_eq(blk_t v, char c)
{
    return (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(c)));
}
static inline unsigned blk_high(blk_t v)
{
    return (unsigned)_mm_movemask_epi8(v);
}
/* bytes outside 0x20..0x7e: a signed compare takes the high ones as negative */
static inline unsigned blk_odd(blk_t v)
{
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                                                    _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f))));
}
#else
typedef struct {
    unsigned char b[16];
} blk_t;
static inline blk_t blk_load(const char *p)
{
    blk_t v;
    memcpy(v.b, p, 16);
    return v;
}
static inline unsigned blk_eq(blk_t v, char c)
{
    unsigned m = 0;
    for (int i = 0; i < 16; i++)
        m |= (unsigned)(v.b[i] == (unsigned char)c) << i;
    return m;
}
static inline unsigned blk_high(blk_t v)
{
    unsigned m = 0;
    for (int i = 0; i < 16; i++)
        m |= (unsigned)(v.b[i] >> 7) << i;
    return m;
}
static inline unsigned blk_odd(blk_t v)
{
    unsigned m = 0;
    for (int i = 0; i < 16; i++)
        m |= (unsigned)(v.b[i] < 0x20 || v.b[i] >= 0x7f) << i;
    return m;
}
#endif

static inline int odd_byte(char c)
{
    return (unsigned char)c < 0x20 || (unsigned char)c >= 0x7f;
}

/* csv_field_t.plain of a field: printable ASCII only. */
static int field_plain(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (odd_byte(p[i]))
            return 0;
    return 1;
}

/*
 * The usual record in one go: its newline is already in the input buffer,
 * it holds no quote and no CR (but a last one before the newline), and it
 * is too short to break max_field or max_fields, so the state machine
 * would only split it at the delimiters. The fields are cut in place: in
 * the reader's own input buffer (a refill happens only in the next
 * csv_next call, which ends the fields' lifetime anyway), or in a copy for
 * a caller's buffer. Returns 1 with the record done (returned, or rejected
 * for invalid UTF-8 in *rc), 0 when the record needs the state machine
 * (nothing consumed, nothing written), -1 on ENOMEM.
 *
 * Two passes of 16-byte blocks: the first finds the newline, gives up at
 * a quote or CR before it and notes high bytes (it writes nothing, so
 * giving up leaves the input as it was); the second cuts the record at
 * the delimiters. Blocks are read only inside the input (the last one of
 * the second pass ends at the record's end, overlapping the one before).
 */
static int fast_record(csv_reader_t *r, const csv_field_t **fields, size_t *n, cp_error_t *err,
                       cp_status *rc)
{
    const char *p = r->in + r->inpos;
    const size_t avail = r->inlen - r->inpos;
    const char d = r->o.delim;
    if (d == '\r')
        return 0;
    /* odd: bytes that keep a field from being plain (csv_field_t), the
     * delimiter aside */
    const int dodd = odd_byte(d);
    size_t i = 0, k;
    unsigned high = 0, odd = 0;
    for (;;) {
        if (i + 16 > avail) {
            for (; i < avail && p[i] != '\n'; i++) {
                if (p[i] == '"' || (p[i] == '\r' && !(i + 1 < avail && p[i + 1] == '\n')))
                    return 0;
                high |= (unsigned char)p[i] >> 7;
                odd |= odd_byte(p[i]) && p[i] != d;
            }
            if (i == avail)
                return 0;
            k = i;
            break;
        }
        blk_t v = blk_load(p + i);
        unsigned nl = blk_eq(v, '\n'), stop = nl | blk_eq(v, '"') | blk_eq(v, '\r');
        unsigned o = blk_odd(v);
        if (dodd)
            o &= ~blk_eq(v, d);
        if (stop == 0) {
            high |= blk_high(v);
            odd |= o;
            i += 16;
            continue;
        }
        unsigned at = (unsigned)__builtin_ctz(stop);
        high |= blk_high(v) & ((1u << at) - 1);
        odd |= o & ((1u << at) - 1);
        i += at;
        if ((nl >> at) & 1) {
            k = i;
            break;
        }
        /* a quote, or a CR: only the one of a CRLF passes */
        if (p[i] != '\r' || i + 1 >= avail || p[i + 1] != '\n')
            return 0;
        k = i + 1;
        break;
    }
    /* k bytes before the newline make at most k + 1 fields of at most k
     * bytes (a final CR counts towards its field's length before it is
     * dropped) */
    if (k + 1 > r->o.max_record || k > r->o.max_field || k + 1 > r->o.max_fields)
        return 0;
    size_t kk = k && p[k - 1] == '\r' ? k - 1 : k;
    if (fields_room(r, k + 1))
        return -1;
    /* the record is cut in the input below: hash its bytes first */
    if (r->hs && !r->memsrc)
        hash_absorb(r, r->consumed + k + 1);
    char *base;
    if (r->memsrc) {
        r->reclen = 0;
        if (bump_rec(r, kk + 1))
            return -1;
        memcpy(r->rec, p, kk);
        base = r->rec;
    } else {
        base = r->in + r->inpos;
    }
    csv_field_t *f = r->fields;
    size_t nf = 0, start = 0;
    for (i = 0; i + 16 <= kk; i += 16) {
        for (unsigned m = blk_eq(blk_load(base + i), d); m; m &= m - 1) {
            size_t at = i + (size_t)__builtin_ctz(m);
            base[at] = '\0';
            f[nf].p = base + start;
            f[nf].len = at - start;
            f[nf].plain = 1;
            nf++;
            start = at + 1;
        }
    }
    if (i < kk) {
        unsigned m = 0;
        if (kk >= 16) {
            /* the block ending at kk; its bytes before i are done */
            m = blk_eq(blk_load(base + kk - 16), d) >> (16 - (kk - i));
        } else {
            for (size_t j = 0; j < kk - i; j++)
                m |= (unsigned)(base[i + j] == d) << j;
        }
        for (; m; m &= m - 1) {
            size_t at = i + (size_t)__builtin_ctz(m);
            base[at] = '\0';
            f[nf].p = base + start;
            f[nf].len = at - start;
            f[nf].plain = 1;
            nf++;
            start = at + 1;
        }
    }
    base[kk] = '\0';
    f[nf].p = base + start;
    f[nf].len = kk - start;
    f[nf].plain = 1;
    nf++;
    if (odd)
        for (size_t j = 0; j < nf; j++)
            f[j].plain = field_plain(f[j].p, f[j].len);
    uint64_t line0 = r->line;
    r->line++;
    r->inpos += k + 1;
    r->consumed += k + 1;
    r->rec_line = line0;
    r->rec_end = r->consumed;
    r->rec_closed = 1;
    r->nfields = nf;
    if (high) {
        for (size_t j = 0; j < nf; j++)
            if (!utf8_valid(f[j].p, f[j].len)) {
                *rc = CP_ERR(err, CP_EINVAL, "line %llu: column %zu: invalid UTF-8",
                             (unsigned long long)line0, j + 1);
                if (err)
                    err->record = line0;
                return 1;
            }
    }
    *fields = f;
    *n = nf;
    *rc = CP_OK;
    return 1;
}

cp_status csv_next(csv_reader_t *r, const csv_field_t **fields, size_t *n, cp_error_t *err)
{
    *fields = NULL;
    *n = 0;
    if (r->started && r->inpos < r->inlen) {
        cp_status rc;
        int got = fast_record(r, fields, n, err, &rc);
        if (got > 0)
            return rc;
        if (got < 0)
            return CP_ERR(err, CP_ENOMEM, "out of memory reading CSV");
    }
    r->reclen = 0;
    r->nfields = 0;
    int state = S_START;
    int any = 0;    /* bytes seen in this record */
    int closed = 0; /* the record ended with a newline */
    cp_status bad = CP_OK;
    char why[200] = "";
    uint64_t col = 1, line0 = r->line, bytes = 0;
    size_t flen = 0; /* bytes of the current field */
    const char d = r->o.delim;
#define FAIL(code, ...)                                                                            \
    do {                                                                                           \
        if (bad == CP_OK) {                                                                        \
            bad = (code);                                                                          \
            snprintf(why, sizeof why, __VA_ARGS__);                                                \
        }                                                                                          \
    } while (0)
    if (new_field(r))
        return CP_ERR(err, CP_ENOMEM, "out of memory reading CSV");
    for (;;) {
        if (r->inpos >= r->inlen) {
            int got = refill(r);
            if (got < 0) {
                int errnum;
                const char *m = r->gz ? gzerror(r->gz, &errnum) : "read error";
                return CP_ERR(err, CP_EIO, "reading CSV input after line %llu: %s",
                              (unsigned long long)r->line, m);
            }
            if (got == 0)
                break;
        }
        if (!r->started) {
            r->started = 1;
            if (r->inlen - r->inpos >= 3 && memcmp(r->in + r->inpos, "\xEF\xBB\xBF", 3) == 0) {
                r->inpos += 3;
                r->consumed += 3;
                continue;
            }
        }
        /* Fast path: a run of ordinary bytes of an unquoted or quoted field
         * (no delimiter, newline, or quote where it matters) is copied in
         * one go when it stays within the limits; the byte after it, and
         * everything near a limit or after an error, goes through the state
         * machine below one byte at a time. */
        if (bad == CP_OK) {
            if (state == S_START) {
                char c0 = r->in[r->inpos];
                if (c0 != '"' && c0 != d && c0 != '\n' && c0 != '\r') {
                    state = S_UNQUOTED; /* the run below appends c0 */
                    any = 1;
                }
            }
            if (state == S_UNQUOTED || state == S_QUOTED) {
                const char *p = r->in + r->inpos;
                size_t avail = r->inlen - r->inpos;
                size_t run =
                    state == S_UNQUOTED ? scan2(p, avail, d, '\n') : scan2(p, avail, '"', '\n');
                if (run > 0 && bytes + run <= r->o.max_record && flen + run <= r->o.max_field) {
                    if (bump_rec(r, run + 1))
                        return CP_ERR(err, CP_ENOMEM, "out of memory reading CSV");
                    memcpy(r->rec + r->reclen, p, run);
                    r->reclen += run;
                    r->inpos += run;
                    r->consumed += run;
                    bytes += run;
                    flen += run;
                    /* and the delimiter that usually ends the run (the state
                     * machine's end_field, inline) */
                    if (state == S_UNQUOTED && r->inpos < r->inlen && r->in[r->inpos] == d &&
                        bytes < r->o.max_record && r->nfields < r->o.max_fields) {
                        r->inpos++;
                        r->consumed++;
                        bytes++;
                        r->rec[r->reclen++] = '\0'; /* bump_rec reserved run + 1 */
                        flen = 0;
                        col++;
                        if (new_field(r))
                            return CP_ERR(err, CP_ENOMEM, "out of memory reading CSV");
                        state = S_START;
                    }
                    continue;
                }
            }
        }
        char c = r->in[r->inpos++];
        r->consumed++;
        any = 1;
        if (++bytes > r->o.max_record)
            FAIL(CP_ELIMIT, "record longer than %zu bytes", r->o.max_record);
        if (c == '\n')
            r->line++;
        int end_record = 0, end_field = 0, append = 0;
        switch (state) {
        case S_START:
            if (c == '"')
                state = S_QUOTED;
            else if (c == d)
                end_field = 1;
            else if (c == '\n')
                end_record = 1;
            else if (c == '\r')
                ; /* part of CRLF; a lone CR before text is dropped too */
            else {
                state = S_UNQUOTED;
                append = 1;
            }
            break;
        case S_UNQUOTED:
            if (c == d)
                end_field = 1;
            else if (c == '\n')
                end_record = 1;
            else
                append = 1; /* including a stray quote, taken literally */
            break;
        case S_QUOTED:
            if (c == '"')
                state = S_QUOTE_SEEN;
            else
                append = 1;
            break;
        case S_QUOTE_SEEN:
            if (c == '"') {
                state = S_QUOTED;
                append = 1;
            } else if (c == d) {
                end_field = 1;
            } else if (c == '\n') {
                end_record = 1;
            } else if (c == '\r') {
                ;
            } else {
                FAIL(CP_EINVAL, "column %llu: text after the closing quote of a quoted field",
                     (unsigned long long)col);
                state = S_BAD;
            }
            break;
        case S_BAD:
            /* Skip to the end of the line. */
            if (c == '\n')
                end_record = 1;
            break;
        }
        if (append && bad == CP_OK) {
            if (++flen > r->o.max_field) {
                FAIL(CP_ELIMIT, "column %llu: field longer than %zu bytes", (unsigned long long)col,
                     r->o.max_field);
            } else if (bump_rec(r, 2)) {
                return CP_ERR(err, CP_ENOMEM, "out of memory reading CSV");
            } else {
                r->rec[r->reclen++] = c;
            }
        }
        if (end_field || end_record) {
            /* Drop the CR of a CRLF at the end of an unquoted field. */
            if (state == S_UNQUOTED && r->reclen > r->starts[r->nfields - 1] &&
                r->rec[r->reclen - 1] == '\r' && end_record)
                r->reclen--;
            if (bump_rec(r, 1))
                return CP_ERR(err, CP_ENOMEM, "out of memory reading CSV");
            r->rec[r->reclen++] = '\0';
            flen = 0;
            if (end_record) {
                closed = 1;
                break;
            }
            col++;
            if (r->nfields >= r->o.max_fields)
                FAIL(CP_ELIMIT, "more than %zu fields in a record", r->o.max_fields);
            else if (new_field(r))
                return CP_ERR(err, CP_ENOMEM, "out of memory reading CSV");
            state = S_START;
        }
    }
    r->rec_line = line0;
    r->rec_end = r->consumed;
    r->rec_closed = closed;
    if (!any)
        return CP_OK; /* end of input */
    if (state == S_QUOTED && r->eof)
        FAIL(CP_EINVAL, "column %llu: quoted field not closed before the end of the input",
             (unsigned long long)col);
    if (!closed) {
        /* Input ended without a newline: close the last field. */
        if (state == S_UNQUOTED && r->reclen > r->starts[r->nfields - 1] &&
            r->rec[r->reclen - 1] == '\r')
            r->reclen--;
        if (bump_rec(r, 1))
            return CP_ERR(err, CP_ENOMEM, "out of memory reading CSV");
        r->rec[r->reclen++] = '\0';
    }
    if (bad) {
        CP_ERR(err, bad, "line %llu: %s", (unsigned long long)line0, why);
        if (err)
            err->record = line0;
        return bad;
    }
    /* All ASCII (the usual case) needs no per-field UTF-8 check. */
    int ascii = ascii_only(r->rec, r->reclen);
    for (size_t i = 0; i < r->nfields; i++) {
        size_t s = r->starts[i];
        size_t e = i + 1 < r->nfields ? r->starts[i + 1] - 1 : r->reclen - 1;
        r->fields[i].p = r->rec + s;
        r->fields[i].len = e - s;
        r->fields[i].plain = field_plain(r->fields[i].p, r->fields[i].len);
        if (!ascii && !utf8_valid(r->fields[i].p, r->fields[i].len)) {
            CP_ERR(err, CP_EINVAL, "line %llu: column %zu: invalid UTF-8",
                   (unsigned long long)line0, i + 1);
            if (err)
                err->record = line0;
            return CP_EINVAL;
        }
    }
    *fields = r->fields;
    *n = r->nfields;
    return CP_OK;
#undef FAIL
}

cp_status csv_seek(csv_reader_t *r, uint64_t offset, uint64_t line, cp_error_t *err)
{
    if (r->consumed != 0)
        return CP_ERR(err, CP_EINVAL, "csv_seek on a reader that has been read");
    if (r->memsrc) {
        if (offset > r->inlen)
            return CP_ERR(err, CP_EINVAL, "resume offset %llu is past the end of the input",
                          (unsigned long long)offset);
        r->inpos = (size_t)offset;
    } else {
        z_off_t got = gzseek(r->gz, (z_off_t)offset, SEEK_SET);
        if (got < 0 || (uint64_t)got != offset)
            return CP_ERR(err, CP_EIO, "cannot resume at byte %llu of the input (shorter now?)",
                          (unsigned long long)offset);
    }
    r->started = 1;
    r->consumed = offset;
    r->rec_end = offset;
    r->line = line + 1;
    r->rec_line = line;
    return CP_OK;
}
