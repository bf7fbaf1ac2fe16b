"""Mixed texts that tokenizer reference checks share (the tests and tools/llamacpp_reference.py),
so ids stored from one tool can be compared with ids computed in another."""

TEXTS: dict[str, str] = {
    "empty": "",
    "space": " ",
    "plain": "Hello world! This is a plain English sentence.",
    "leading_spaces": "   three leading spaces and one trailing ",
    "space_runs": "a  b   c    d     e      f       g        h",
    "newlines": "line one\nline two\n\nafter a blank line\n\n\n\nfour newlines\r\nwindows ending",
    "tabs": "col1\tcol2\t\tcol3\t\t\t\tcol4\n\tindented\n\t\tdouble",
    "code": (
        "def fibonacci(n: int) -> list[int]:\n"
        "    \"\"\"Return the first n Fibonacci numbers.\"\"\"\n"
        "    a, b = 0, 1\n"
        "    out = []\n"
        "    for _ in range(n):\n"
        "        out.append(a)\n"
        "        a, b = b, a + b\n"
        "    return out\n\n"
        "if __name__ == '__main__':\n"
        "    print(fibonacci(10))  # [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]\n"
    ),
    "c_code": "int main(void) {\n\tfor (int i = 0; i < 10; ++i) { printf(\"%d\\n\", i); }\n\treturn 0;\n}",
    "json": '{"name": "Ingot", "version": [0, 1, 0], "ok": true, "ratio": 3.14159, "none": null}',
    "accents": "Crème brûlée, naïve café, jalapeño, Zürich, São Paulo, Ångström, façade, déjà vu.",
    "accents_decomposed": "Cre\u0300me bru\u0302le\u0301e (combining marks)",
    "german_french": "Größenordnung über Straße — l'été dernier, c'était « génial » !",
    "cyrillic_greek": "Привет, мир! Ελληνικά γράμματα: αβγδε ΑΒΓΔΕ.",
    "arabic_hebrew": "مرحبا بالعالم — שלום עולם",
    "hindi_thai": "नमस्ते दुनिया · สวัสดีชาวโลก",
    "cjk": "日本語のテキストです。中文文本测试，你好世界！한국어 텍스트입니다.",
    "emoji": "Emoji: 😀🎉🚀 👩‍💻 🇫🇷 ❤️ 👍🏽 🦙🦙🦙 ✅",
    "rare_chars": "Math: ∀x∈ℝ, ∑ᵢ xᵢ² ≤ ∞; ℵ₀ ≠ 𝔠. Runes ᚠᚢᚦ, box ╔═╗, braille ⠓⠑⠇⠇⠕",
    "digits": "0 1 12 123 1234 12345 123456 1234567 3.14159 2,718 1e-9 0x1F 007 -42",
    "punctuation": "Wait... what?! (yes) [no] {maybe} <tag> 'single' \"double\" `back` ~tilde~ @at #hash $5 %p ^c &a *s",
    "contractions": "I've been told he's there; you'RE sure? I'M not, we'Ve a'lL done it, don't we'd",
    "special_looking": "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>",
    "special_inline": "text <bos> more <eos> and <pad> then <unk> and <mask>",
    "fake_specials": "<start_of_turn <end_of_turn> <|im_start|> <|endoftext|> </s> <s> [INST] <<SYS>>",
    "byte_token_text": "literal <0x0A> and <0xFF> and <0x41>",
    "unused_text": "<unused0> <unused99> [multimodal] <start_of_image>",
    "urls": "https://example.com/path?query=1&other=two#frag and user@example.org",
    "mixed_ws": " \t \n \u00a0nbsp\u3000ideographic space\u2009thin\u200bzero-width",
    "long_word": "Pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious",
    "repeat": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ---------------------------- ======== ........",
    "markdown": "# Title\n\n* item one\n* item **two**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nx = 1\n```",
    "trailing_newline": "ends with a newline\n",
    "only_newlines": "\n\n\n",
    "only_spaces": "      ",
    "paragraph": (
        "The committee met on 12 March 2024 at 09:30 to review the budget (≈ €1.2M). "
        "Dr. O'Neill argued that the so-called \"efficiency gains\" were overstated; "
        "Ms. Nakamura (中村) disagreed, citing Q3 figures: +4.7 % year-on-year, 3,200 units "
        "shipped, and a 17-day backlog. Afterwards, everyone went to the café across the street."
    ),
    "multilingual": (
        "English, Español (¿qué tal?), Português (ação), Français (œuvre), Deutsch (Ärger), "
        "Polski (żółć), Čeština (příliš), Türkçe (ığdır), Tiếng Việt (người), Русский (ёж), "
        "Українська (ґанок), Ελληνικά (ψυχή), עברית, العربية, فارسی, हिन्दी, বাংলা, தமிழ், "
        "ไทย, ລາວ, ქართული, Հայերեն, 日本語（ひらがな・カタカナ）, 简体中文, 繁體中文, 한국어."
    ),
    "shell_log": (
        "$ ls -la /var/log | grep -E 'sys(log)?' && echo \"done\" > /tmp/out.txt 2>&1\n"
        "2024-03-12T09:30:00.123Z [INFO ] worker-7: processed 1024 items in 3.5s (292.6 it/s)\n"
        "2024-03-12T09:30:01.004Z [WARN ] retrying request id=0xDEADBEEF attempt=2/5\n"
    ),
    "html_latex": (
        "<div class=\"note\"><p>Hello&nbsp;<b>world</b></p></div>\n"
        "$$\\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}$$ and \\(a^2 + b^2 = c^2\\)"
    ),
    "emoji_dense": "🙂🙃😉😊😇🥰😍🤩😘😗☺️😚😙🥲😋😛😜🤪😝🤑🤗🤭🫢🫣🤫🤔🫡🤐🤨😐😑😶🫥😶‍🌫️😏😒🙄😬😮‍💨🤥",
    "control_chars": "bell\x07 escape\x1b[31mred\x1b[0m nul-free \x7f del, form\x0cfeed, vtab\x0b",
}
