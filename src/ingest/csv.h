/*
 * csv.h — a streaming RFC 4180 CSV reader over plain or gzip files.
 *
 * Accepted: quoted fields ("a, b"), escaped quotes ("say ""hi"""),
 * line breaks inside quoted fields, LF or CRLF record ends, a UTF-8 byte
 * order mark at the start, a configurable one-byte delimiter, a last
 * record without a final newline. Lenient where real files are: a quote
 * inside an unquoted field (7" FRAME) is taken literally. Rejected, with
 * the 1-based line the record starts on: text after a closing quote
 * ("a"b), an unterminated quoted field at the end of input, invalid UTF-8,
 * a field longer than max_field, a record longer than max_record bytes or
 * with more than max_fields fields. A bad record is skipped whole and the
 * reader continues with the next one (the caller writes it to a rejects
 * file); read errors (CP_EIO) are final.
 *
 * Input: csv_open() reads through zlib's gzopen/gzread, which reads gzip
 * transparently and plain files as they are; csv_open_mem() reads a
 * buffer. Memory is bounded by max_record (constant in the file size).
 */
#ifndef CP_INGEST_CSV_H
#define CP_INGEST_CSV_H

#include <stddef.h>
#include <stdint.h>

#include <xxhash.h>

#include "crowdpack.h"

#define CSV_DEFAULT_MAX_FIELD (64u * 1024)
#define CSV_DEFAULT_MAX_RECORD (1u << 20)
#define CSV_DEFAULT_MAX_FIELDS 1024u

typedef struct csv_opts {
    char delim;        /* 0 = ',' */
    size_t max_field;  /* 0 = CSV_DEFAULT_MAX_FIELD */
    size_t max_record; /* 0 = CSV_DEFAULT_MAX_RECORD */
    size_t max_fields; /* 0 = CSV_DEFAULT_MAX_FIELDS */
    /* 1 = read a gzip file through zlib's streaming inflate even when it is
     * small enough to be inflated whole at open (the default: faster; the
     * same records, offsets and errors). */
    int stream;
} csv_opts_t;

/* A field of the current record: borrowed until the next csv_next call.
 * p is NUL-terminated (not counted in len). */
typedef struct csv_field {
    const char *p;
    size_t len;
    /* 1: the field is known to be printable ASCII (bytes 0x20..0x7e only:
     * no control byte, no NUL, nothing for a UTF-8 check); 0: not known.
     * csv_next sets it. Readers of fields (mapping_row_event) skip their
     * own checks on it, so fields built by hand must say 0 (or the truth):
     * {p, len} initializers do. */
    int plain;
} csv_field_t;

typedef struct csv_reader csv_reader_t;

/* Opens a file (gzip or plain). CP_ENOTFOUND / CP_EIO with the path and
 * errno text. `o` may be NULL. *out: csv_close(). */
cp_status csv_open(const char *path, const csv_opts_t *o, csv_reader_t **out, cp_error_t *err);
/* Reads a memory buffer (borrowed for the reader's life). */
cp_status csv_open_mem(const char *buf, size_t len, const csv_opts_t *o, csv_reader_t **out,
                       cp_error_t *err);
void csv_close(csv_reader_t *r); /* NULL fine */

/*
 * The next record. CP_OK with *fields and *n (n >= 1), or CP_OK with
 * *fields == NULL at the end of input. A bad record: CP_EINVAL/CP_ELIMIT
 * with err naming the line (err->record = its first line) and column; the
 * reader has moved past it, call again to continue. CP_EIO: read error.
 */
cp_status csv_next(csv_reader_t *r, const csv_field_t **fields, size_t *n, cp_error_t *err);

/* 1-based line the last record returned (or rejected) started on. */
uint64_t csv_line(const csv_reader_t *r);
/* Uncompressed bytes consumed through the end of the last record: the
 * position to resume after it. */
uint64_t csv_offset(const csv_reader_t *r);
/* Compressed bytes read from the file so far (progress bars); for plain
 * files and buffers the same as the uncompressed count. */
uint64_t csv_raw_offset(const csv_reader_t *r);

/*
 * Resumes at `offset` (a csv_offset() value of an earlier read of the same
 * input) with line numbering continuing after `line` (csv_line() of the
 * record that ended there). Only on a fresh reader. gzip input is
 * decompressed up to there (gzseek), plain input seeks.
 */
cp_status csv_seek(csv_reader_t *r, uint64_t offset, uint64_t line, cp_error_t *err);

/*
 * Prefix hashing, for imports that recognise a file by the content they
 * already took from it (src/engine/import.c). csv_hash_start begins an
 * XXH3-128 over the uncompressed input from the reader's position (right
 * after open or csv_seek; `st` the state of the bytes before it, or NULL at
 * the start). csv_hash_at copies into *out the state after the first
 * `offset` bytes; offsets asked must not go backwards and must lie at or
 * after the start of the last record returned (csv_offset() of the one
 * before it) — the reader keeps only that record's bytes, bounded by
 * max_record. CP_ELIMIT when an overlong line made the bytes go.
 */
cp_status csv_hash_start(csv_reader_t *r, const XXH3_state_t *st, cp_error_t *err);
cp_status csv_hash_at(csv_reader_t *r, uint64_t offset, XXH3_state_t *out, cp_error_t *err);
/* 1 if the last record returned (or rejected) ended with a line break, 0
 * if the input ended inside it (a line still being written, perhaps). */
int csv_last_closed(const csv_reader_t *r);
/* 1 if the input is gzip (a complete stream: its end is the real end). */
int csv_compressed(const csv_reader_t *r);

#endif /* CP_INGEST_CSV_H */
