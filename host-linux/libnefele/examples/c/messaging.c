/*
 * messaging.c: two processes of the tenant on the answering agent's host talk
 * through their agent, driven from outside Nefele (a tenant token, acting as
 * each process in turn): register, whereis, send by name and by pid, receive with
 * and without a timeout; then on a link, past the agent (the receiver in a
 * thread: a send on a link returns once it took the message). Exits non-zero on
 * the first unexpected answer.
 *
 *   cc -Wall -Werror -o messaging messaging.c -I host-linux/libnefele/include \
 *       -L target/debug -lnefele
 *   LD_LIBRARY_PATH=target/debug ./messaging [SOCKET [TOKEN]]
 *
 * A program started by Nefele would call nefele_connect_self instead and act as
 * itself.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nefele.h"

#define N 9

static void expect(int rc, int want, const char *what) {
    if (rc != want) {
        fprintf(stderr, "messaging.c: %s: %s (%d), expected %d\n", what, nefele_strerror(rc),
                rc, want);
        exit(1);
    }
}

static int same_pid(nefele_pid a, nefele_pid b) { return a.hi == b.hi && a.lo == b.lo; }

/* Receives one message on c, which must come from `from` and say `want`. */
static void receive(nefele_client *c, nefele_pid from, const char *want) {
    nefele_pid sender;
    char buf[64];
    size_t len = 0;
    expect(nefele_recv(c, 5000, &sender, buf, sizeof buf, &len), NEFELE_OK, "recv");
    if (!same_pid(sender, from) || len != strlen(want) || memcmp(buf, want, len) != 0) {
        fprintf(stderr, "messaging.c: got %.*s from another sender or text\n", (int)len, buf);
        exit(1);
    }
    printf("received %.*s\n", (int)len, buf);
}

/* A receiver thread's client and what it expects. */
struct reader {
    nefele_client *client;
    nefele_pid from;
    const char *want;
};

static void *read_one(void *arg) {
    struct reader *r = arg;
    receive(r->client, r->from, r->want);
    return NULL;
}

int main(int argc, char **argv) {
    const char *socket_path = argc > 1 ? argv[1] : NULL;
    const char *token = argc > 2 ? argv[2] : NULL;
    nefele_client *a = NULL, *b = NULL;
    expect(nefele_connect(socket_path, token, &a), NEFELE_OK, "connect a");
    expect(nefele_connect(socket_path, token, &b), NEFELE_OK, "connect b");

    /* Enough sleepers that some land on this agent's host. */
    const char *args[] = {"sleep", "600", NULL};
    nefele_spec spec = NEFELE_SPEC_INIT;
    spec.path = "/bin/sleep";
    spec.argv = args;
    spec.cpu_millicores = 300;
    spec.memory_bytes = 16 << 20;
    nefele_pid pids[N];
    expect(nefele_n_spawn(a, N, &spec, pids), NEFELE_OK, "n_spawn");
    nefele_proc *procs = NULL;
    size_t count = 0;
    expect(nefele_ps(a, &procs, &count, NULL), NEFELE_OK, "ps");
    nefele_pid local[2];
    int found = 0;
    for (size_t i = 0; i < count && found < 2; i++) {
        if (procs[i].distance == 0 && procs[i].state == NEFELE_STATE_RUNNING) {
            local[found++] = procs[i].pid;
        }
    }
    nefele_ps_free(procs, count);
    if (found < 2) {
        fprintf(stderr, "messaging.c: fewer than two processes on this host\n");
        return 1;
    }
    nefele_pid me;
    expect(nefele_self(a, &me), NEFELE_ENOTSELF, "self before act_as");
    expect(nefele_act_as(a, local[0]), NEFELE_OK, "act_as a");
    expect(nefele_act_as(b, local[1]), NEFELE_OK, "act_as b");
    expect(nefele_self(a, &me), NEFELE_OK, "self");

    expect(nefele_register(a, "c-reader"), NEFELE_OK, "register");
    nefele_pid where;
    expect(nefele_whereis(b, "c-reader", &where), NEFELE_OK, "whereis");
    if (!same_pid(where, local[0])) {
        fprintf(stderr, "messaging.c: whereis answered another pid\n");
        return 1;
    }
    printf("whereis c-reader: ok\n");
    expect(nefele_whereis(b, "nobody", &where), NEFELE_ENONAME, "whereis nobody");

    expect(nefele_send_name(b, "c-reader", "hello", 5), NEFELE_OK, "send_name");
    receive(a, local[1], "hello");
    expect(nefele_send(a, local[1], "world", 5), NEFELE_OK, "send");
    receive(b, local[0], "world");

    nefele_pid from;
    char small[2];
    size_t len = 0;
    expect(nefele_recv(a, 0, &from, small, sizeof small, &len), NEFELE_ETIMEDOUT, "empty recv");
    expect(nefele_send(a, local[1], "too long", 8), NEFELE_OK, "send");
    expect(nefele_recv(b, 5000, &from, small, sizeof small, &len), NEFELE_ERANGE, "small buffer");
    printf("empty and too small: ok (%zu bytes)\n", len);

    /* A link: the send waits for the receiver, so it reads in a thread. */
    expect(nefele_link(a, local[1]), NEFELE_OK, "link");
    struct reader r = {b, local[0], "linked"};
    pthread_t t;
    if (pthread_create(&t, NULL, read_one, &r) != 0) {
        fprintf(stderr, "messaging.c: no thread\n");
        return 1;
    }
    expect(nefele_send(a, local[1], "linked", 6), NEFELE_OK, "send on the link");
    pthread_join(t, NULL);
    expect(nefele_unlink(a, local[1]), NEFELE_OK, "unlink");
    expect(nefele_send(a, local[1], "after", 5), NEFELE_OK, "send after the link");
    receive(b, local[0], "after");

    for (int i = 0; i < N; i++) {
        expect(nefele_kill(a, pids[i], 9), NEFELE_OK, "kill");
    }
    nefele_close(a);
    nefele_close(b);
    return 0;
}
