/*
 * expr_int.h — private to the expression code (lexer, parser, JSON form,
 * printer). Not for the planner: it sees only ast.h.
 */
#ifndef CP_QUERY_EXPR_INT_H
#define CP_QUERY_EXPR_INT_H

#include <stddef.h>
#include <stdint.h>

#include "query/ast.h"
#include "util/util.h"

/* The tree and the arena that owns every node, array and string of it. */
struct expr {
    arena_t arena;
    expr_node_t *root;
};

/* A new empty expr_t (root NULL); NULL on ENOMEM. */
expr_t *expr__new(void);

/* A zeroed node of `kind` at (line, column) in e's arena; NULL on ENOMEM. */
expr_node_t *expr__node(expr_t *e, expr_kind kind, int line, int column);

/*
 * Collects the operands of one AND / OR while they are parsed or decoded,
 * splicing operands of the same kind (so `(a AND b) AND c` and
 * `a AND (b AND c)` are both AND(a, b, c)) and tracking the depth of the
 * node being built. Storage is in the arena (doubling; the waste is at most
 * the final size).
 */
typedef struct expr_list {
    expr_kind kind; /* EXPR_AND or EXPR_OR */
    expr_node_t **items;
    size_t n, cap;
    int max_depth; /* deepest operand so far */
} expr_list_t;

void expr__list_init(expr_list_t *l, expr_kind kind);
/* Adds `n` (of tree depth `depth`), splicing it if it has l->kind. */
cp_status expr__list_add(expr_t *e, expr_list_t *l, expr_node_t *n, int depth);

/* 1 if [s, s+len) is a keyword (AND OR NOT BETWEEN IN ALL TRUE FALSE),
 * case-insensitively. */
int expr__is_keyword(const char *s, size_t len);
/* 1 if s is a valid attribute identifier: [A-Za-z_][A-Za-z0-9_]*, not a keyword. */
int expr__is_ident(const char *s, size_t len);
/* 1 if s can be printed as a bare tag path (else it is quoted). */
int expr__is_bare_path(const char *s, size_t len);
/* 1 if s can be printed as a bare crowd name. */
int expr__is_bare_name(const char *s, size_t len);
/* Path and name characters (ASCII part; bytes >= 0x80 are also path chars). */
static inline int expr__path_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '/' || c == '-' || c >= 0x80;
}
static inline int expr__name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c >= 0x80; /* crowd:广州理财 */
}

/* The operator's canonical spelling ("=", "!=", "<", "<=", ">", ">="). */
const char *expr__op_text(expr_op op);

/* ------------------------------------------------------------------ lexer */

typedef enum tok_kind {
    TOK_EOF = 1,
    TOK_LPAREN,
    TOK_RPAREN,
    TOK_COMMA,
    TOK_OP,          /* comparison operator: tok.op */
    TOK_WORD,        /* [A-Za-z_][A-Za-z0-9_]* (keywords included) */
    TOK_INT,         /* -?digits */
    TOK_REAL,        /* -?digits(.digits)?([eE][+-]?digits)? with '.' or exponent */
    TOK_STRING,      /* "..." or '...', unescaped into tok.s / tok.slen */
    TOK_TAG,         /* tag:PATH, path in tok.s */
    TOK_CROWD,       /* crowd:NAME, name in tok.s */
    TOK_GROUP,       /* group:ID, id in tok.s */
    TOK_GROUP_TRAIT, /* group.TRAIT, trait name in tok.s */
} tok_kind;

typedef struct tok {
    tok_kind kind;
    size_t off, len;  /* source span */
    int line, column; /* of the first byte */
    expr_op op;       /* TOK_OP */
    int64_t i;        /* TOK_INT (valid unless `overflow`) */
    int overflow;     /* TOK_INT outside int64 */
    double r;         /* TOK_INT, TOK_REAL: the value as a double (may be inf) */
    size_t glued;     /* TOK_INT, TOK_REAL: length of letters stuck to it ("10km": 2) */
    const char *s;    /* TOK_STRING / TOK_TAG / TOK_CROWD (arena, NUL-terminated) */
    size_t slen;
} tok_t;

typedef struct lexer {
    const char *src;
    size_t len, pos;
    int line;
    size_t line_start; /* offset of the current line's first byte */
    size_t col_off;    /* column cache: offset ... */
    int col;           /* ... and its 1-based column (in code points) */
    arena_t *arena;    /* for unescaped strings */
    tok_t tok;         /* the current token */
} lexer_t;

/* Starts lexing src (already checked to be valid UTF-8); does not read a token. */
void lexer_init(lexer_t *lx, const char *src, size_t len, arena_t *arena);
/* Reads the next token into lx->tok. CP_ESYNTAX / CP_EINVAL / CP_ENOMEM with
 * a positioned message. */
cp_status lexer_next(lexer_t *lx, cp_error_t *err);
/* Line and column (code points, 1-based) of byte offset `off`, which must not
 * lie before the current line. */
void lexer_pos(lexer_t *lx, size_t off, int *line, int *column);
/* Describes the current token for messages: "')'", "'ANDD'", "string \"ab\"",
 * "end of expression". */
void lexer_describe(const lexer_t *lx, const tok_t *t, char *buf, size_t cap);
/* Offset of the next non-blank byte at or after `off`. */
size_t lexer_skip_blank(const lexer_t *lx, size_t off);
/*
 * did() dates: if the current token (an integer) begins a bare date
 * YYYY-MM-DD that no letter, digit, '.' or ':' continues, re-reads those 10
 * bytes as one token: *found = 1, *day = days since 1970-01-01, and the next
 * token is read. Otherwise *found = 0 and nothing changes.
 */
cp_status lexer_take_date(lexer_t *lx, int *found, int32_t *day, cp_error_t *err);
/* Days since 1970-01-01 of exactly "YYYY-MM-DD" (10 bytes); -1 if not a date. */
int expr__parse_day(const char *s, size_t len, int32_t *day);

#endif /* CP_QUERY_EXPR_INT_H */
