/* Chat templates in C: the native formats compiler/native_chat.py matched against the
 * artefact's Jinja template at compile time (plan "chat_native"). Each format here is the C
 * twin of a Python mirror in compiler/native_chat.py; change both together. */
#ifndef INGOT_CHAT_H
#define INGOT_CHAT_H

#include <stddef.h>

#include "artefact.h"
#include "ingot.h"

typedef struct {
    int format;          /* index into chat.c's formats; -1: none (why says why) */
    char bos[64], eos[64];
    char why[448];
} chat_cfg;

/* Reads the plan's "chat_native" entry; never fails (a missing or odd entry: format -1). */
void chat_load(const art_file *a, chat_cfg *c);
/* Renders msgs as ingot_chat_apply documents; err gets the message of a failure. */
int chat_render(const chat_cfg *c, const ingot_message *msgs, size_t n, int add_generation_prompt,
                char *out, size_t cap, size_t *needed, char *err, size_t err_size);

#endif
