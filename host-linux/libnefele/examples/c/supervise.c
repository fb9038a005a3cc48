/*
 * supervise.c: start two short-lived processes under a one-for-one supervisor,
 * watch the supervisor start each again when it ends (a new pid, in its
 * restart history), then stop the supervisor and its children. Exits non-zero
 * on the first error.
 *
 *   cc -o supervise supervise.c -I host-linux/libnefele/include -L target/debug -lnefele
 *   LD_LIBRARY_PATH=target/debug ./supervise [SOCKET [TOKEN]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nefele.h"

#define N 2

static int check(int rc, const char *what) {
    if (rc != NEFELE_OK) {
        fprintf(stderr, "supervise.c: %s: %s (%d)\n", what, nefele_strerror(rc), rc);
        exit(1);
    }
    return rc;
}

static int same(nefele_pid a, nefele_pid b) { return a.hi == b.hi && a.lo == b.lo; }

static int same_id(nefele_supervisor_id a, nefele_supervisor_id b) {
    return a.origin == b.origin && a.incarnation == b.incarnation && a.sequence == b.sequence;
}

/* Whether every first pid was restarted (a history record from it to a new pid). */
static int all_restarted(const nefele_supervisor *s, const nefele_pid *first) {
    int found = 0;
    for (int j = 0; j < N; j++) {
        for (size_t k = 0; k < s->history_count; k++) {
            const nefele_restart *r = &s->history[k];
            if (r->has_old && r->has_new && same(r->old_pid, first[j]) && r->child == (uint32_t)j &&
                r->cause == NEFELE_CAUSE_EXITED && r->exit.kind == NEFELE_EXIT_CODE) {
                found++;
                break;
            }
        }
    }
    return found == N;
}

int main(int argc, char **argv) {
    const char *socket_path = argc > 1 ? argv[1] : NULL;
    const char *token = argc > 2 ? argv[2] : NULL;
    nefele_client *client = NULL;
    check(nefele_connect(socket_path, token, &client), "connect");

    const char *args[] = {"sleep", "1", NULL};
    nefele_spec spec = NEFELE_SPEC_INIT;
    spec.path = "/bin/sleep";
    spec.argv = args;
    spec.cpu_millicores = 100;
    int policy = NEFELE_RESTART_PERMANENT;
    nefele_supervision supervision = {NEFELE_STRATEGY_ONE_FOR_ONE, 100, 60000, &policy, 1};
    nefele_supervisor_id id;
    nefele_pid pids[N];
    check(nefele_n_supervise(client, N, &spec, &supervision, &id, pids), "n_supervise");
    char text[34];
    check(nefele_supervisor_id_to_string(id, text, sizeof text), "supervisor_id_to_string");
    printf("supervisor %s\n", text);

    /* Each child sleeps a second, ends with code 0, and is started again. */
    int restarted = 0;
    for (int tries = 0; tries < 200 && !restarted; tries++) {
        nefele_supervisor *list = NULL;
        size_t count = 0;
        check(nefele_supervisors(client, &list, &count), "supervisors");
        for (size_t i = 0; i < count; i++) {
            const nefele_supervisor *s = &list[i];
            if (!same_id(s->id, id)) continue;
            if (s->strategy != NEFELE_STRATEGY_ONE_FOR_ONE || s->child_count != N ||
                s->max_restarts != 100 || s->period_ms != 60000 ||
                s->children[0].policy != NEFELE_RESTART_PERMANENT) {
                fprintf(stderr, "supervise.c: the listing does not say what was asked\n");
                return 1;
            }
            if (all_restarted(s, pids)) {
                restarted = 1;
                printf("every child restarted; state %d, %zu restart records\n", s->state,
                       s->history_count);
            }
        }
        nefele_supervisors_free(list, count);
        if (!restarted) {
            struct timespec pause = {0, 100 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
    }
    if (!restarted) {
        fprintf(stderr, "supervise.c: the children were not restarted\n");
        return 1;
    }

    check(nefele_stop_supervisor(client, id), "stop_supervisor");
    int again = nefele_stop_supervisor(client, id);
    printf("stopped; stopping again: %s\n", nefele_strerror(again));
    nefele_close(client);
    return again == NEFELE_ENOSUPERVISOR ? 0 : 1;
}
