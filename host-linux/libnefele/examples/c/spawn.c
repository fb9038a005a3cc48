/*
 * spawn.c: start three sleepers somewhere in the cluster (on different servers,
 * in different racks where the cluster has them, with a profile that says they
 * run until killed), list them, kill them and wait for
 * each. Exits non-zero on the first error.
 *
 *   cc -o spawn spawn.c -I host-linux/libnefele/include -L target/debug -lnefele
 *   LD_LIBRARY_PATH=target/debug ./spawn [SOCKET [TOKEN]]
 */
#include <stdio.h>
#include <stdlib.h>

#include "nefele.h"

#define N 3

static int check(int rc, const char *what) {
    if (rc != NEFELE_OK) {
        fprintf(stderr, "spawn.c: %s: %s (%d)\n", what, nefele_strerror(rc), rc);
        exit(1);
    }
    return rc;
}

int main(int argc, char **argv) {
    const char *socket_path = argc > 1 ? argv[1] : NULL;
    const char *token = argc > 2 ? argv[2] : NULL;
    nefele_client *client = NULL;
    check(nefele_connect(socket_path, token, &client), "connect");

    const char *args[] = {"sleep", "600", NULL};
    nefele_affinity spread = {NEFELE_AFFINITY_SPREAD, "sleepers", {0, 0}};
    nefele_profile profile = {10, 1 << 20, NEFELE_FOREVER};
    nefele_spec spec = NEFELE_SPEC_INIT;
    spec.path = "/bin/sleep";
    spec.argv = args;
    spec.cpu_millicores = 250;
    spec.memory_bytes = 16 << 20;
    /* Limits are fields too (cpu_limit_millicores, memory_limit_bytes,
       pids_limit); left at 0 here, so that the example runs on servers that
       cannot enforce them (a spawn asking one fails NEFELE_EUNENFORCEABLE_LIMIT). */
    spec.affinity = &spread;
    spec.affinity_count = 1;
    spec.profile = &profile;
    nefele_pid pids[N];
    size_t unspread = 0;
    check(nefele_n_spawn_placed(client, N, &spec, pids, &unspread), "n_spawn_placed");
    /* With fewer racks than processes, the tag cannot be spread: said here. */
    printf("spread tags not spread across racks: %zu\n", unspread);
    char text[33];
    for (int i = 0; i < N; i++) {
        check(nefele_pid_to_string(pids[i], text, sizeof text), "pid_to_string");
        printf("spawned %s\n", text);
    }

    nefele_proc *procs = NULL;
    size_t count = 0;
    uint32_t unanswered = 0;
    check(nefele_ps(client, &procs, &count, &unanswered), "ps");
    int listed = 0;
    for (size_t i = 0; i < count; i++) {
        for (int j = 0; j < N; j++) {
            /* Provisional: started, its host not yet told the request is placed. */
            if (procs[i].pid.hi == pids[j].hi && procs[i].pid.lo == pids[j].lo &&
                (procs[i].state == NEFELE_STATE_RUNNING ||
                 procs[i].state == NEFELE_STATE_PROVISIONAL)) {
                listed++;
            }
        }
    }
    printf("ps: %zu processes, %d of ours running or provisional, %u agents silent\n", count, listed, unanswered);
    nefele_ps_free(procs, count);
    if (listed != N) {
        fprintf(stderr, "spawn.c: ps listed %d of our %d processes\n", listed, N);
        return 1;
    }

    for (int i = 0; i < N; i++) {
        check(nefele_kill(client, pids[i], 9), "kill");
        nefele_exit how;
        check(nefele_wait(client, pids[i], &how), "wait");
        check(nefele_pid_to_string(pids[i], text, sizeof text), "pid_to_string");
        printf("%s ended: kind %d value %d\n", text, how.kind, how.value);
    }
    nefele_close(client);
    return 0;
}
