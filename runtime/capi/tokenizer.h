/* libingot's native tokenizer: text <-> token ids from an artefact's "vocab_native" section
 * (written by compiler/native_vocab.py), matching Hugging Face `tokenizers` on the vocabularies
 * Ingot's artefacts carry (SentencePiece-style BPE with byte fallback; byte-level BPE with the
 * GPT-2, Llama 3 or Qwen2 pre-tokenizer).
 *
 * C11, libc only. No global state. Memory is allocated only in ingot_tok_create (the handle and
 * its scratch space, sized by max_text_bytes) and released in ingot_tok_free. The section is read
 * in place: it must stay mapped and unchanged for the handle's lifetime. A handle may be used by
 * one thread at a time (encode uses its scratch space); create one per thread to share a section.
 */
#ifndef INGOT_TOKENIZER_H
#define INGOT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ingot_tok ingot_tok;

enum {
    INGOT_TOK_OK = 0,
    INGOT_TOK_E_ARG = -1,      /* a NULL pointer or a bad flag */
    INGOT_TOK_E_NOMEM = -2,
    INGOT_TOK_E_FORMAT = -3,   /* corrupt or truncated section */
    INGOT_TOK_E_VERSION = -4,  /* a section version this library does not read */
    INGOT_TOK_E_CHECKSUM = -5,
    INGOT_TOK_E_UTF8 = -6,     /* the text is not valid UTF-8 */
    INGOT_TOK_E_TOO_LONG = -7, /* the text is longer than max_text_bytes */
    INGOT_TOK_E_SMALL = -8,    /* the output buffer is too small: *needed says how big */
    INGOT_TOK_E_ID = -9        /* a token id outside the vocabulary */
};

/* encode flags */
#define INGOT_TOK_ADD_SPECIAL 1u   /* BOS/EOS as the tokenizer's post-processor and config say */
/* decode flags */
#define INGOT_TOK_SKIP_SPECIAL 1u  /* leave out special (control) tokens */
#define INGOT_TOK_CONTINUE 2u      /* ids continue an earlier decode: keep a leading space */

/* Opens a section of `size` bytes (4-byte aligned). max_text_bytes bounds the text one encode
 * call accepts (0: 256 KiB); the handle's scratch space is about 50 bytes per byte of it. On
 * failure returns an error code, sets *out to NULL and writes a message to err (err_size bytes,
 * may be 0). */
int ingot_tok_create(const void *section, size_t size, size_t max_text_bytes, ingot_tok **out,
                     char *err, size_t err_size);
void ingot_tok_free(ingot_tok *tok);

/* Encodes len bytes of UTF-8 text. Writes up to cap ids; *needed is always the full count.
 * Returns INGOT_TOK_E_SMALL (ids partly written) when cap < *needed. */
int ingot_tok_encode(ingot_tok *tok, const char *text, size_t len, unsigned flags, int32_t *ids,
                     size_t cap, size_t *needed);

/* Decodes n ids to bytes (one id: n = 1). Writes up to cap bytes; *needed is always the full
 * length. The bytes are the tokens' own, unchanged: a split UTF-8 character stays split (where
 * `tokenizers` would put U+FFFD), which is what a streaming caller wants. */
int ingot_tok_decode(ingot_tok *tok, const int32_t *ids, size_t n, unsigned flags, char *out,
                     size_t cap, size_t *needed);

/* A token's decoded bytes, in place (no copy); NULL for an unknown id. */
const char *ingot_tok_token_bytes(const ingot_tok *tok, int32_t id, size_t *len);

int32_t ingot_tok_vocab_size(const ingot_tok *tok);
int32_t ingot_tok_bos(const ingot_tok *tok);  /* -1 when none */
int32_t ingot_tok_eos(const ingot_tok *tok);  /* -1 when none */
int ingot_tok_is_special(const ingot_tok *tok, int32_t id);

/* The message for the last failed call on this handle ("" when none). */
const char *ingot_tok_last_error(const ingot_tok *tok);
/* A constant description of an error code. */
const char *ingot_tok_strerror(int code);

#ifdef __cplusplus
}
#endif
#endif
