/* SPDX-License-Identifier: MIT */
/* Reload (see reload.h). */
#include "reload.h"

#include <string.h>

#include "config.h"
#include "daemon.h"
#include "relay.h"

size_t
hd_reload_sinks(struct hd_daemon *d, const struct hd_config *next)
{
    size_t n = 0;
    for (size_t i = 0; i < d->nsinks; i++) {
        for (size_t j = 0; j < next->nsinks; j++) {
            if (strcmp(d->sinks[i].conf->s.name, next->sinks[j].s.name) == 0 &&
                d->sinks[i].conf->type == next->sinks[j].type) {
                hd_relay_reload(&d->sinks[i], &next->sinks[j]);
                n++;
            }
        }
    }
    return n;
}
