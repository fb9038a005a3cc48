/*
 * patterns.c: the messaging patterns from C. Three processes of the tenant on the
 * answering agent's host (a, b and w), driven from outside Nefele with a tenant
 * token: group sends (multicast, round-robin), publish/subscribe, broadcast, a
 * monitor's Down mail, unregister, distance, and a receive armed for poll(2).
 * Exits non-zero on the first unexpected answer.
 *
 *   cc -Wall -Werror -o patterns patterns.c -I host-linux/libnefele/include \
 *       -L target/debug -lnefele
 *   LD_LIBRARY_PATH=target/debug ./patterns [SOCKET [TOKEN]]
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nefele.h"

#define N 12

static void expect(int rc, int want, const char *what) {
    if (rc != want) {
        fprintf(stderr, "patterns.c: %s: %s (%d), expected %d\n", what, nefele_strerror(rc), rc,
                want);
        exit(1);
    }
}

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "patterns.c: %s\n", what);
        exit(1);
    }
}

static int same_pid(nefele_pid a, nefele_pid b) { return a.hi == b.hi && a.lo == b.lo; }

/* Takes one data mail from c, which must say `want`. */
static void receive(nefele_client *c, const char *want) {
    nefele_mail mail;
    char buf[64];
    expect(nefele_recv_mail(c, 5000, &mail, buf, sizeof buf), NEFELE_OK, want);
    check(mail.kind == NEFELE_MAIL_DATA && mail.len == strlen(want) &&
              memcmp(buf, want, mail.len) == 0,
          "another mail than expected");
}

/* Takes every mail already in c's mailbox; returns how many. */
static int drain(nefele_client *c) {
    nefele_mail mail;
    char buf[64];
    int n = 0;
    while (nefele_recv_mail(c, 0, &mail, buf, sizeof buf) == NEFELE_OK) {
        n++;
    }
    return n;
}

int main(int argc, char **argv) {
    const char *socket_path = argc > 1 ? argv[1] : NULL;
    const char *token = argc > 2 ? argv[2] : NULL;
    nefele_client *a = NULL, *b = NULL, *w = NULL;
    expect(nefele_connect(socket_path, token, &a), NEFELE_OK, "connect a");
    expect(nefele_connect(socket_path, token, &b), NEFELE_OK, "connect b");
    expect(nefele_connect(socket_path, token, &w), NEFELE_OK, "connect w");

    /* Enough sleepers that some land on this agent's host. */
    const char *args[] = {"sleep", "600", NULL};
    nefele_spec spec = NEFELE_SPEC_INIT;
    spec.path = "/bin/sleep";
    spec.argv = args;
    spec.cpu_millicores = 200;
    spec.memory_bytes = 16 << 20;
    nefele_pid pids[N];
    expect(nefele_n_spawn(a, N, &spec, pids), NEFELE_OK, "n_spawn");
    nefele_proc *procs = NULL;
    size_t count = 0;
    expect(nefele_ps(a, &procs, &count, NULL), NEFELE_OK, "ps");
    nefele_pid local[3];
    int found = 0;
    for (size_t i = 0; i < count && found < 3; i++) {
        if (procs[i].distance == 0 && procs[i].state == NEFELE_STATE_RUNNING) {
            local[found++] = procs[i].pid;
        }
    }
    nefele_ps_free(procs, count);
    check(found == 3, "fewer than three processes on this host");
    expect(nefele_act_as(a, local[0]), NEFELE_OK, "act_as a");
    expect(nefele_act_as(b, local[1]), NEFELE_OK, "act_as b");
    expect(nefele_act_as(w, local[2]), NEFELE_OK, "act_as w");

    /* Groups: multicast reaches both members, round-robin one each in turn. */
    expect(nefele_join(a, "workers"), NEFELE_OK, "join a");
    expect(nefele_join(b, "workers"), NEFELE_OK, "join b");
    uint32_t reached = 0;
    expect(nefele_send_group(w, "workers", NEFELE_PATTERN_MULTICAST, "all", 3, &reached),
           NEFELE_OK, "multicast");
    check(reached == 2, "multicast reached another number of members");
    receive(a, "all");
    receive(b, "all");
    for (int i = 0; i < 2; i++) {
        expect(nefele_send_group(w, "workers", NEFELE_PATTERN_ROUND_ROBIN, "one", 3, &reached),
               NEFELE_OK, "round-robin");
        check(reached == 1, "round-robin reached more than one member");
    }
    receive(a, "one");
    receive(b, "one");
    expect(nefele_send_group(w, "workers", 99, "x", 1, NULL), NEFELE_EINVAL, "bad pattern");
    expect(nefele_leave(b, "workers"), NEFELE_OK, "leave");
    expect(nefele_send_group(w, "workers", NEFELE_PATTERN_MULTICAST, "left", 4, &reached),
           NEFELE_OK, "multicast after leave");
    check(reached == 1, "a member that left was reached");
    receive(a, "left");
    printf("groups: ok\n");

    /* Publish/subscribe. */
    expect(nefele_subscribe(b, "news"), NEFELE_OK, "subscribe");
    expect(nefele_publish(w, "news", "extra", 5, &reached), NEFELE_OK, "publish");
    check(reached == 1, "publish reached another number of subscribers");
    receive(b, "extra");
    expect(nefele_unsubscribe(b, "news"), NEFELE_OK, "unsubscribe");
    printf("pubsub: ok\n");

    /* Broadcast: every process of the tenant the tree knows of (processes of other
     * hosts spawned a moment ago may not be indexed yet); those here at once. */
    expect(nefele_broadcast(w, "hi all", 6, &reached), NEFELE_OK, "broadcast");
    check(reached >= 3 && reached <= N, "broadcast reached another number of processes");
    check(drain(a) == 1 && drain(b) == 1, "a broadcast missed a or b");
    drain(w);
    printf("broadcast: ok\n");

    /* Names. */
    nefele_pid where;
    expect(nefele_register(a, "c-patterns"), NEFELE_OK, "register");
    expect(nefele_unregister(a, "c-patterns"), NEFELE_OK, "unregister");
    expect(nefele_whereis(w, "c-patterns", &where), NEFELE_ENONAME, "whereis after unregister");

    /* Distance: same host. */
    int distance = -1;
    int64_t rtt = 0;
    expect(nefele_distance(a, local[2], &distance, &rtt), NEFELE_OK, "distance");
    check(distance == 0, "another host than expected");
    printf("distance: same host\n");

    /* A monitor's Down mail says who ended and how. */
    expect(nefele_monitor(a, local[1]), NEFELE_OK, "monitor");
    expect(nefele_kill(w, local[1], 9), NEFELE_OK, "kill b");
    nefele_mail mail;
    char buf[64];
    expect(nefele_recv_mail(a, 5000, &mail, buf, sizeof buf), NEFELE_OK, "down");
    check(mail.kind == NEFELE_MAIL_DOWN && same_pid(mail.from, local[1]) &&
              mail.down_reason == NEFELE_DOWN_EXITED &&
              mail.down_exit.kind == NEFELE_EXIT_SIGNALED && mail.down_exit.value == 9,
          "another mail than b's Down");
    printf("down: killed by signal %d\n", mail.down_exit.value);

    /* A receive armed for the caller's poll loop. */
    expect(nefele_arm(a), NEFELE_OK, "arm");
    int fd = -1;
    expect(nefele_fd(a, &fd), NEFELE_OK, "fd");
    expect(nefele_send(w, local[0], "polled", 6), NEFELE_OK, "send");
    struct pollfd p = {.fd = fd, .events = POLLIN};
    check(poll(&p, 1, 5000) == 1, "the descriptor did not turn readable");
    expect(nefele_take_armed(a, &mail, buf, sizeof buf), NEFELE_OK, "take_armed");
    check(mail.kind == NEFELE_MAIL_DATA && mail.len == 6 && memcmp(buf, "polled", 6) == 0 &&
              same_pid(mail.from, local[2]),
          "another mail than the one sent");
    printf("poll: ok\n");

    for (int i = 0; i < N; i++) {
        if (!same_pid(pids[i], local[1])) {
            expect(nefele_kill(w, pids[i], 9), NEFELE_OK, "kill");
        }
    }
    nefele_close(a);
    nefele_close(b);
    nefele_close(w);
    return 0;
}
