/* SPDX-License-Identifier: MIT */
/* Target functions: hd_config_load_buffer (tls_allowed_peers, T_IDENTS in
 *                   src/hopperd/config.c) hd_auth_tls_names
 *                   (src/hopperd/auth.c)
 * Property: an arbitrary allow-list value never crashes the loader; when
 * it is accepted the stored list is at most 32 entries of printable ASCII
 * without commas or blanks at either end, joined by single commas, and
 * every entry admits a certificate carrying exactly it (in any ASCII case);
 * for arbitrary certificate names hd_auth_tls_names never crashes, is
 * deterministic, admits exactly when a name equals an entry without regard
 * to ASCII case, and leaves a terminated reason when it refuses.
 *
 * Input: line 1 is the tls_allowed_peers value; each further line is one
 * certificate name (at most 32 are used). */
#include "fuzz_common.h"

#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <strings.h>

#include "auth.h"
#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reference: does `name` equal an entry of the stored list (ASCII case
 * ignored)? Written apart from auth.c, as the check of its answer. */
static int
listed(const char *list, const char *name)
{
    char copy[HD_LIST_TEXT];
    snprintf(copy, sizeof(copy), "%s", list);
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        if (strcasecmp(tok, name) == 0) {
            return 1;
        }
    }
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) {
        return 0;
    }
    char *in = malloc(size + 1);
    FZ_CHECK(in != NULL, "out of memory");
    memcpy(in, data, size);
    in[size] = '\0';
    for (size_t i = 0; i < size; i++) {
        if (in[i] == '\0') {
            in[i] = ' ';
        }
    }
    char *rest = strchr(in, '\n');
    if (rest != NULL) {
        *rest++ = '\0';
    }
    char text[8192];
    snprintf(text, sizeof(text),
             "[queue a]\n[source t]\ntype = tcp\nlisten = 127.0.0.1:1\nqueue = a\ntls = on\n"
             "tls_cert = /c\ntls_key = /k\ntls_ca = /ca\ntls_allowed_peers = %s\n",
             in);
    struct hd_config *cfg = NULL;
    char err[HD_ERR_LEN];
    const char *list = "";
    if (hd_config_load_buffer("fuzz.conf", text, strlen(text), &cfg, err, sizeof(err)) == 0) {
        list = cfg->sources[0].tls.allowed_peers;
        size_t n = strlen(list);
        FZ_CHECK(n < HD_LIST_TEXT, "list not terminated");
        size_t entries = n > 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)list[i];
            FZ_CHECK(c >= ' ' && c <= '~', "byte %u in '%s'", c, list);
            if (c == ',') {
                entries++;
                FZ_CHECK(i > 0 && i + 1 < n && list[i + 1] != ',', "empty entry in '%s'", list);
                FZ_CHECK(list[i - 1] != ' ' && list[i + 1] != ' ', "blank at an edge: '%s'", list);
            }
        }
        FZ_CHECK(n == 0 || (list[0] != ' ' && list[n - 1] != ' '), "blank at an edge: '%s'", list);
        FZ_CHECK(entries <= 32, "%zu entries", entries);
        /* Every entry admits itself, upper-cased too. */
        char copy[HD_LIST_TEXT];
        snprintf(copy, sizeof(copy), "%s", list);
        for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok != NULL;
             tok = strtok_r(NULL, ",", &save)) {
            char why[200];
            const char *names[1] = {tok};
            FZ_CHECK(hd_auth_tls_names(list, names, 1, why, sizeof(why)) == 1, "'%s' refused", tok);
            char up[HD_LIST_TEXT];
            size_t k = 0;
            for (; tok[k] != '\0'; k++) {
                up[k] = (char)toupper((unsigned char)tok[k]);
            }
            up[k] = '\0';
            names[0] = up;
            FZ_CHECK(hd_auth_tls_names(list, names, 1, why, sizeof(why)) == 1, "'%s' refused", up);
        }
    } else {
        FZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL, "error not terminated");
        FZ_CHECK(strncmp(err, "fuzz.conf:", 10) == 0, "error '%s'", err);
    }
    /* Certificate names against the list (the stored one, or "" when the
     * value was refused: then everyone is admitted). */
    const char *names[32];
    size_t n = 0;
    for (char *save = NULL, *tok = rest != NULL ? strtok_r(rest, "\n", &save) : NULL;
         tok != NULL && n < 32; tok = strtok_r(NULL, "\n", &save)) {
        names[n++] = tok;
    }
    char why1[200], why2[200];
    memset(why1, 'x', sizeof(why1));
    memset(why2, 'y', sizeof(why2));
    int a = hd_auth_tls_names(list, names, n, why1, sizeof(why1));
    int b = hd_auth_tls_names(list, names, n, why2, sizeof(why2));
    FZ_CHECK(a == b, "not deterministic");
    int want = list[0] == '\0';
    for (size_t i = 0; i < n && !want; i++) {
        want = listed(list, names[i]);
    }
    FZ_CHECK(a == want, "answer %d, reference %d for list '%s'", a, want, list);
    if (!a) {
        FZ_CHECK(memchr(why1, '\0', sizeof(why1)) != NULL && strcmp(why1, why2) == 0,
                 "reason not terminated or not deterministic");
    }
    hd_config_free(cfg);
    free(in);
    return 0;
}
