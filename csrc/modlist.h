/*
 * modlist.h: read the top-level "modules" array of strings out of /etc/volant/vm.json.
 *
 * A purpose-built scanner, not a JSON library: it walks the top-level object, skips every
 * other value (nested objects, arrays, strings, numbers, literals) without interpreting it,
 * and decodes only the strings of "modules". A missing key (or null) means no modules; when
 * the key appears twice the last one wins, as in Python's json module. Anything malformed is
 * an error with a message and a byte offset, and the caller loads nothing.
 *
 * Only libc, C99; every function is static so init.c and the test harness include it.
 */
#ifndef VOLANT_MODLIST_H
#define VOLANT_MODLIST_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define MODLIST_MAX_DEPTH 64

struct modlist {
    char **paths;
    size_t count;
};

struct modlist_scanner {
    const char *text;
    size_t len;
    size_t pos;
    const char *error;
};

static int modlist_fail(struct modlist_scanner *s, const char *message)
{
    if (s->error == NULL)
        s->error = message;
    return -1;
}

static void modlist_skip_space(struct modlist_scanner *s)
{
    while (s->pos < s->len) {
        char c = s->text[s->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        s->pos++;
    }
}

static int modlist_peek(struct modlist_scanner *s)
{
    modlist_skip_space(s);
    return s->pos < s->len ? (unsigned char)s->text[s->pos] : -1;
}

static int modlist_hex4(struct modlist_scanner *s, unsigned *out)
{
    unsigned value = 0;
    size_t i;
    if (s->len - s->pos < 4)
        return modlist_fail(s, "truncated \\u escape");
    for (i = 0; i < 4; i++) {
        char c = s->text[s->pos++];
        value <<= 4;
        if (c >= '0' && c <= '9')
            value |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            value |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            value |= (unsigned)(c - 'A' + 10);
        else
            return modlist_fail(s, "bad hex digit in \\u escape");
    }
    *out = value;
    return 0;
}

static size_t modlist_utf8(unsigned code, char *out)
{
    if (code < 0x80) {
        out[0] = (char)code;
        return 1;
    }
    if (code < 0x800) {
        out[0] = (char)(0xC0 | (code >> 6));
        out[1] = (char)(0x80 | (code & 0x3F));
        return 2;
    }
    if (code < 0x10000) {
        out[0] = (char)(0xE0 | (code >> 12));
        out[1] = (char)(0x80 | ((code >> 6) & 0x3F));
        out[2] = (char)(0x80 | (code & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (code >> 18));
    out[1] = (char)(0x80 | ((code >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((code >> 6) & 0x3F));
    out[3] = (char)(0x80 | (code & 0x3F));
    return 4;
}

/*
 * Scan a string starting at its opening quote. With `out` set, the decoded text is
 * malloc'ed into *out (NUL-terminated; an escaped NUL is an error); otherwise it is skipped.
 */
static int modlist_string(struct modlist_scanner *s, char **out)
{
    char *buf = NULL;
    size_t used = 0;

    if (modlist_peek(s) != '"')
        return modlist_fail(s, "expected a string");
    s->pos++;
    if (out != NULL) {
        /* Decoding never makes a string longer than its source text. */
        buf = malloc(s->len - s->pos + 1);
        if (buf == NULL)
            return modlist_fail(s, "out of memory");
    }
    while (s->pos < s->len) {
        unsigned char c = (unsigned char)s->text[s->pos++];
        char enc[4];
        size_t n = 1;
        if (c == '"') {
            if (out != NULL) {
                buf[used] = '\0';
                *out = buf;
            }
            return 0;
        }
        if (c < 0x20) {
            free(buf);
            return modlist_fail(s, "control character in string");
        }
        enc[0] = (char)c;
        if (c == '\\') {
            if (s->pos >= s->len)
                break;
            c = (unsigned char)s->text[s->pos++];
            switch (c) {
            case '"': enc[0] = '"'; break;
            case '\\': enc[0] = '\\'; break;
            case '/': enc[0] = '/'; break;
            case 'b': enc[0] = '\b'; break;
            case 'f': enc[0] = '\f'; break;
            case 'n': enc[0] = '\n'; break;
            case 'r': enc[0] = '\r'; break;
            case 't': enc[0] = '\t'; break;
            case 'u': {
                unsigned code, low;
                if (modlist_hex4(s, &code) != 0) {
                    free(buf);
                    return -1;
                }
                if (code >= 0xD800 && code <= 0xDBFF) {
                    if (s->len - s->pos < 6 || s->text[s->pos] != '\\' ||
                        s->text[s->pos + 1] != 'u') {
                        free(buf);
                        return modlist_fail(s, "unpaired surrogate in \\u escape");
                    }
                    s->pos += 2;
                    if (modlist_hex4(s, &low) != 0) {
                        free(buf);
                        return -1;
                    }
                    if (low < 0xDC00 || low > 0xDFFF) {
                        free(buf);
                        return modlist_fail(s, "unpaired surrogate in \\u escape");
                    }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                } else if (code >= 0xDC00 && code <= 0xDFFF) {
                    free(buf);
                    return modlist_fail(s, "unpaired surrogate in \\u escape");
                }
                if (code == 0 && out != NULL) {
                    free(buf);
                    return modlist_fail(s, "NUL character in a module path");
                }
                n = modlist_utf8(code, enc);
                break;
            }
            default:
                free(buf);
                return modlist_fail(s, "invalid escape in string");
            }
        }
        if (out != NULL) {
            memcpy(buf + used, enc, n);
            used += n;
        }
    }
    free(buf);
    return modlist_fail(s, "unterminated string");
}

static int modlist_skip_value(struct modlist_scanner *s, int depth);

static int modlist_skip_container(struct modlist_scanner *s, int depth, char close)
{
    int first = 1;
    if (depth >= MODLIST_MAX_DEPTH)
        return modlist_fail(s, "nested too deeply");
    s->pos++; /* the opening bracket */
    for (;;) {
        int c = modlist_peek(s);
        if (c == close) {
            s->pos++;
            return 0;
        }
        if (!first) {
            if (c != ',')
                return modlist_fail(s, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
            s->pos++;
        }
        first = 0;
        if (close == '}') {
            if (modlist_string(s, NULL) != 0)
                return -1;
            if (modlist_peek(s) != ':')
                return modlist_fail(s, "expected ':'");
            s->pos++;
        }
        if (modlist_skip_value(s, depth + 1) != 0)
            return -1;
    }
}

static int modlist_skip_value(struct modlist_scanner *s, int depth)
{
    int c = modlist_peek(s);
    size_t start;
    if (c == '"')
        return modlist_string(s, NULL);
    if (c == '{')
        return modlist_skip_container(s, depth, '}');
    if (c == '[')
        return modlist_skip_container(s, depth, ']');
    if (c == 't' || c == 'f' || c == 'n') {
        const char *word = c == 't' ? "true" : c == 'f' ? "false" : "null";
        size_t n = strlen(word);
        if (s->len - s->pos < n || memcmp(s->text + s->pos, word, n) != 0)
            return modlist_fail(s, "expected a value");
        s->pos += n;
        return 0;
    }
    /* A number: its characters up to the next delimiter. */
    start = s->pos;
    while (s->pos < s->len) {
        char ch = s->text[s->pos];
        if ((ch >= '0' && ch <= '9') || ch == '-' || ch == '+' || ch == '.' || ch == 'e' ||
            ch == 'E')
            s->pos++;
        else
            break;
    }
    if (s->pos == start)
        return modlist_fail(s, "expected a value");
    return 0;
}

static void modlist_free(struct modlist *list)
{
    size_t i;
    for (i = 0; i < list->count; i++)
        free(list->paths[i]);
    free(list->paths);
    list->paths = NULL;
    list->count = 0;
}

static int modlist_array(struct modlist_scanner *s, struct modlist *out)
{
    int first = 1;
    s->pos++; /* '[' */
    for (;;) {
        int c = modlist_peek(s);
        char *path = NULL;
        char **grown;
        if (c == ']') {
            s->pos++;
            return 0;
        }
        if (!first) {
            if (c != ',')
                return modlist_fail(s, "expected ',' or ']' in \"modules\"");
            s->pos++;
            c = modlist_peek(s);
        }
        first = 0;
        if (c != '"')
            return modlist_fail(s, "\"modules\" must be an array of strings");
        if (modlist_string(s, &path) != 0)
            return -1;
        grown = realloc(out->paths, (out->count + 1) * sizeof(*grown));
        if (grown == NULL) {
            free(path);
            return modlist_fail(s, "out of memory");
        }
        out->paths = grown;
        out->paths[out->count++] = path;
    }
}

/*
 * Parse `len` bytes of JSON. Returns 0 with the module paths in *out (possibly none), or -1
 * with *error and *error_offset set and *out empty.
 */
static int modlist_parse(const char *text, size_t len, struct modlist *out, const char **error,
                         size_t *error_offset)
{
    struct modlist_scanner s;
    int first = 1;

    s.text = text;
    s.len = len;
    s.pos = 0;
    s.error = NULL;
    out->paths = NULL;
    out->count = 0;

    if (modlist_peek(&s) != '{') {
        modlist_fail(&s, "the document must be a JSON object");
        goto failed;
    }
    s.pos++;
    for (;;) {
        int c = modlist_peek(&s);
        char *key = NULL;
        int is_modules;
        if (c == '}') {
            s.pos++;
            break;
        }
        if (!first) {
            if (c != ',') {
                modlist_fail(&s, "expected ',' or '}'");
                goto failed;
            }
            s.pos++;
        }
        first = 0;
        if (modlist_string(&s, &key) != 0)
            goto failed;
        is_modules = strcmp(key, "modules") == 0;
        free(key);
        if (modlist_peek(&s) != ':') {
            modlist_fail(&s, "expected ':'");
            goto failed;
        }
        s.pos++;
        if (!is_modules) {
            if (modlist_skip_value(&s, 1) != 0)
                goto failed;
            continue;
        }
        modlist_free(out);
        c = modlist_peek(&s);
        if (c == '[') {
            if (modlist_array(&s, out) != 0)
                goto failed;
        } else if (c == 'n' && s.len - s.pos >= 4 && memcmp(s.text + s.pos, "null", 4) == 0) {
            s.pos += 4;
        } else {
            modlist_fail(&s, "\"modules\" must be an array of strings");
            goto failed;
        }
    }
    if (modlist_peek(&s) != -1) {
        modlist_fail(&s, "unexpected text after the JSON object");
        goto failed;
    }
    return 0;

failed:
    modlist_free(out);
    *error = s.error;
    *error_offset = s.pos;
    return -1;
}

#endif
