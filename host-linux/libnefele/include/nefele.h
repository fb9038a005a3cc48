/*
 * nefele.h: the C interface of libnefele, the client of a local Nefele agent.
 *
 * Link with -lnefele (the cdylib built from host-linux/libnefele). Every
 * function returns NEFELE_OK (0) or a negative NEFELE_E* code; nefele_strerror
 * names a code. A pointer argument that is NULL where a value is needed gives
 * NEFELE_EINVAL. Strings are NUL-terminated UTF-8.
 *
 * Ownership: a nefele_client comes from nefele_connect and is released with
 * nefele_close; the array nefele_ps returns is released with nefele_ps_free,
 * the one nefele_supervisors returns with nefele_supervisors_free.
 * Everything else is owned by the caller. A client is used by one thread at a
 * time (open one per thread).
 */
#ifndef NEFELE_H
#define NEFELE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NEFELE_OK 0
#define NEFELE_EINVAL (-1)              /* invalid argument */
#define NEFELE_EIO (-2)                 /* cannot reach the agent */
#define NEFELE_EPROTO (-3)              /* protocol error with the agent */
#define NEFELE_EAUTH (-4)               /* not authenticated by the agent */
#define NEFELE_ENOSUCH (-5)             /* no such process (for this tenant) */
#define NEFELE_ESHORT_CPU (-6)          /* not enough cpu for the request */
#define NEFELE_ESHORT_MEMORY (-7)       /* not enough memory */
#define NEFELE_ESHORT_ACCELERATORS (-8) /* not enough accelerators */
#define NEFELE_ESHORT_HOSTS (-9)        /* not enough hosts for the affinity rules */
#define NEFELE_EABORTED (-10)           /* a chosen host did not answer; nothing runs */
#define NEFELE_EUNREACHABLE (-11)       /* the process's host did not answer */
#define NEFELE_EEXITED (-12)            /* the process has exited already */
#define NEFELE_ELOST (-13)              /* the process was lost with its host */
#define NEFELE_EREQUEST (-14)           /* the agent found the request malformed */
#define NEFELE_ERANGE (-15)             /* buffer too small */
#define NEFELE_EINTERNAL (-16)          /* a bug in libnefele */
#define NEFELE_ENOTSELF (-17)           /* messaging: not a live local process of the tenant (on a process's endpoint: not itself) */
#define NEFELE_ENONAME (-18)            /* messaging: no such name */
#define NEFELE_ETAKEN (-19)             /* messaging: the name is taken */
#define NEFELE_EFULL (-20)              /* messaging: the destination mailbox is full */
#define NEFELE_ETOOLARGE (-21)          /* messaging: the message is over the size limit */
#define NEFELE_EUNKNOWN (-22)           /* messaging: fate unknown (no answer in time) */
#define NEFELE_ETIMEDOUT (-23)          /* messaging: no message within the timeout */
#define NEFELE_EMSG (-24)               /* messaging: another failure */
#define NEFELE_ENOENDPOINT (-25)        /* no Nefele endpoint ($NEFELE_FD) */
#define NEFELE_EOVERTAKEN (-26)         /* messaging: overtaken by a later message of the pair; not delivered */
#define NEFELE_EPARTIAL (-27)           /* messaging: a fan-out send missed full (or overtaken) members; the others got it */
#define NEFELE_ERESTARTED (-28)         /* the agent restarted during the call: its effect is unknown (reconnected) */
#define NEFELE_ENOSUPERVISOR (-29)      /* no such supervisor of the tenant at the agent called */

/* A global pid: 128 bits; its text form is hi then lo in hex. */
typedef struct {
    uint64_t hi;
    uint64_t lo;
} nefele_pid;

#define NEFELE_ESHORT_CPU_CLASS (-40)      /* no host with room has a cpu of the asked speed class */
#define NEFELE_EUNAVAIL_CPU_CLASS (-41)    /* no host of the cluster has a cpu of that class */
#define NEFELE_EUNAVAIL_ACCELERATORS (-42) /* no host of the cluster has that many accelerators */
#define NEFELE_EUNENFORCEABLE_LIMIT (-43)  /* no host with room can enforce a limit the spec asks for */

/* A placement rule. */
#define NEFELE_AFFINITY_TOGETHER 1 /* same server as the others with tag */
#define NEFELE_AFFINITY_APART 2    /* a different server from the others with tag */
#define NEFELE_AFFINITY_SPREAD 3   /* different racks from the others with tag, when it can */
#define NEFELE_AFFINITY_NEAR 4     /* as near as placement can to pid (its host, rack, row) */
typedef struct {
    int kind;                       /* NEFELE_AFFINITY_* */
    const char *tag;                /* together, apart, spread; NULL for near */
    nefele_pid pid;                 /* near only */
} nefele_affinity;

/* What a process is expected to use. Placement spreads long jobs (a minute or
   more) and services (NEFELE_FOREVER) onto the hosts with the most room, and
   packs the others (the first host in its usual order that fits). */
#define NEFELE_FOREVER UINT64_MAX
typedef struct {
    uint32_t cpu_millicores;        /* expected average cpu */
    uint64_t memory_bytes;          /* expected peak memory */
    uint64_t duration_ms;           /* expected run time; NEFELE_FOREVER for a service */
} nefele_profile;

/* What to run. No field names a server: placement decides. Start from
   NEFELE_SPEC_INIT: `size` lets the struct grow without breaking callers built
   against an older header (fields past a caller's size read as zero; a newer
   caller's extra fields must be zero for an older library). Zero means "not
   given" for every number. In an array every element has the same size. */
typedef struct {
    uint32_t size;                  /* sizeof(nefele_spec): set by NEFELE_SPEC_INIT */
    const char *path;               /* absolute path of the executable */
    const char *const *argv;        /* argv[0] included, NULL-terminated; may be NULL */
    const char *const *envp;        /* "KEY=VALUE", NULL-terminated; may be NULL */
    uint32_t cpu_millicores;        /* to reserve; 0 lets the agent decide */
    uint64_t memory_bytes;          /* to reserve; 0 lets the agent decide */
    uint32_t cpu_limit_millicores;  /* cgroup cpu quota; 0: none */
    uint32_t pids_limit;            /* most tasks; 0: the host's default */
    uint64_t memory_limit_bytes;    /* over it the process is OOM-killed; 0: none */
    uint32_t accelerators;          /* devices to reserve */
    uint32_t cpu_class;             /* slowest cpu speed class accepted (speed/250,
                                       1000 = a 2 GHz core, so class 4); 0: any */
    const nefele_affinity *affinity; /* may be NULL when affinity_count is 0 */
    size_t affinity_count;
    const nefele_profile *profile;  /* may be NULL */
} nefele_spec;

#define NEFELE_SPEC_INIT { .size = sizeof(nefele_spec) }

#define NEFELE_EXIT_CODE 0     /* value = exit code */
#define NEFELE_EXIT_SIGNALED 1 /* value = signal number */
#define NEFELE_EXIT_OOM 2      /* over its memory limit */
#define NEFELE_EXIT_LOST 3     /* lost with its host */

typedef struct {
    int kind; /* NEFELE_EXIT_* */
    int value;
} nefele_exit;

#define NEFELE_STATE_PROVISIONAL 0
#define NEFELE_STATE_RUNNING 1
#define NEFELE_STATE_EXITED 2
#define NEFELE_STATE_LOST 3

/* One process table entry. distance: 0 same host, 1 same group, 2 elsewhere in the DC,
   3 external. */
typedef struct {
    nefele_pid pid;
    uint32_t host;
    int state;          /* NEFELE_STATE_* */
    nefele_exit exit;   /* when state is NEFELE_STATE_EXITED */
    uint32_t cpu_millicores;
    uint64_t memory_bytes;
    uint64_t age_ms;
    int distance;
    char command[256];  /* NUL-terminated, truncated to fit */
} nefele_proc;

typedef struct nefele_client nefele_client;

/* Connects to the agent's socket (NULL: $NEFELE_SOCKET, else /run/nefele/api.sock)
 * with a tenant token (NULL: $NEFELE_TOKEN, else authenticate by uid). */
int nefele_connect(const char *socket_path, const char *token, nefele_client **out);
void nefele_close(nefele_client *client);

/* One process; its pid goes to *out. */
int nefele_spawn(nefele_client *client, const nefele_spec *spec, nefele_pid *out);
/* n identical processes, atomically (all or none); pids go to out[0..n). */
int nefele_n_spawn(nefele_client *client, uint32_t n, const nefele_spec *spec, nefele_pid *out);
/* count different processes, atomically; pids go to out[0..count), in spec order. */
int nefele_c_spawn(nefele_client *client, const nefele_spec *specs, size_t count, nefele_pid *out);
/* As nefele_n_spawn and nefele_c_spawn; *unspread (unspread may be NULL) gets the
 * number of spread tags placement could not spread across racks: their processes
 * run on distinct servers, some sharing a rack (0: every tag was spread). */
int nefele_n_spawn_placed(nefele_client *client, uint32_t n, const nefele_spec *spec, nefele_pid *out,
                          size_t *unspread);
int nefele_c_spawn_placed(nefele_client *client, const nefele_spec *specs, size_t count, nefele_pid *out,
                          size_t *unspread);

/* signal: 0 = stop (SIGTERM, then SIGKILL after a grace period), 9 = kill now,
 * any other 1..64 is delivered as is. Reaches the process and its descendants. */
int nefele_kill(nefele_client *client, nefele_pid pid, int signal);
int nefele_info(nefele_client *client, nefele_pid pid, nefele_proc *out);
/* Every process of the caller's tenant: *out gets an array of *count entries
 * (release with nefele_ps_free); *unanswered (may be NULL) the agents that did
 * not answer in time. */
int nefele_ps(nefele_client *client, nefele_proc **out, size_t *count, uint32_t *unanswered);
void nefele_ps_free(nefele_proc *procs, size_t count);
/* Blocks until the process ends. */
int nefele_wait(nefele_client *client, nefele_pid pid, nefele_exit *out);

/* Supervision. A supervisor is a system service of the cluster (not a tenant
 * process): it starts its children again, through placement, when they end or
 * are lost with their host, by a restart policy per child and a strategy, up to
 * an intensity (at most max_restarts restarts of a child within period_ms; one
 * more gives the child up). It outlives the crash of any single host. */
#define NEFELE_STRATEGY_ONE_FOR_ONE 0  /* only the child that ended restarts */
#define NEFELE_STRATEGY_ONE_FOR_ALL 1  /* every child restarts */
#define NEFELE_STRATEGY_REST_FOR_ONE 2 /* the child that ended and every later one */
#define NEFELE_RESTART_PERMANENT 0     /* always restarted */
#define NEFELE_RESTART_TRANSIENT 1     /* restarted unless it exited with code 0 */
#define NEFELE_RESTART_TEMPORARY 2     /* never restarted */
typedef struct {
    uint32_t origin;      /* the agent that created it */
    uint32_t incarnation; /* that agent's life then */
    uint32_t sequence;
} nefele_supervisor_id;
typedef struct {
    int strategy;            /* NEFELE_STRATEGY_* */
    uint32_t max_restarts;   /* most restarts of one child within period_ms */
    uint64_t period_ms;      /* not 0 */
    const int *policies;     /* NEFELE_RESTART_*: one for all, or one per child */
    size_t policy_count;     /* 1, or the number of children */
} nefele_supervision;
#define NEFELE_SUPERVISOR_RUNNING 0
#define NEFELE_SUPERVISOR_GAVE_UP 1 /* past the intensity (one-for-all, rest-for-one): children stopped */
#define NEFELE_SUPERVISOR_STOPPED 2 /* stopped by a client: children stopped */
#define NEFELE_CHILD_RUNNING 0
#define NEFELE_CHILD_RESTARTING 1
#define NEFELE_CHILD_ENDED 2        /* not restarted by its policy; see exit */
#define NEFELE_CHILD_GAVE_UP 3      /* past the intensity */
#define NEFELE_CHILD_STOPPED 4      /* stopped with its supervisor */
typedef struct {
    uint32_t index;       /* position in the spawn */
    int policy;           /* NEFELE_RESTART_* */
    int has_pid;          /* whether pid is set */
    nefele_pid pid;       /* current (or last) pid */
    int state;            /* NEFELE_CHILD_* */
    nefele_exit exit;     /* when state is NEFELE_CHILD_ENDED */
    uint32_t restarts;
} nefele_child;
#define NEFELE_CAUSE_EXITED 0  /* see exit */
#define NEFELE_CAUSE_LOST 1    /* lost with its host */
#define NEFELE_CAUSE_SIBLING 2 /* taken along by a sibling's restart */
typedef struct {
    uint32_t child;       /* the child's index */
    int has_old;
    nefele_pid old_pid;   /* the pid that ended */
    int has_new;          /* 0: given up, or not started yet */
    nefele_pid new_pid;   /* the pid that replaced it */
    int cause;            /* NEFELE_CAUSE_* */
    nefele_exit exit;     /* when cause is NEFELE_CAUSE_EXITED */
    int gave_up;          /* whether this record is the child's give-up */
} nefele_restart;
typedef struct {
    nefele_supervisor_id id;
    uint32_t home;            /* node id of the agent running it now */
    int state;                /* NEFELE_SUPERVISOR_* */
    int strategy;             /* NEFELE_STRATEGY_* */
    uint32_t max_restarts;
    uint64_t period_ms;
    nefele_child *children;   /* in spawn order */
    size_t child_count;
    nefele_restart *history;  /* last restarts, oldest first */
    size_t history_count;
} nefele_supervisor;
/* count processes (as nefele_spawn when count is 1, else nefele_c_spawn), all
 * or none, under a new supervisor: its id to *id_out, pids to pids_out[0..count). */
int nefele_supervise(nefele_client *client, const nefele_spec *specs, size_t count,
                     const nefele_supervision *supervision, nefele_supervisor_id *id_out,
                     nefele_pid *pids_out);
/* n identical processes under a new supervisor. */
int nefele_n_supervise(nefele_client *client, uint32_t n, const nefele_spec *spec,
                       const nefele_supervision *supervision, nefele_supervisor_id *id_out,
                       nefele_pid *pids_out);
/* The tenant's supervisors the agent called runs, in id order: *out gets an array
 * of *count entries (release it, children and history included, with
 * nefele_supervisors_free). */
int nefele_supervisors(nefele_client *client, nefele_supervisor **out, size_t *count);
void nefele_supervisors_free(nefele_supervisor *list, size_t count);
/* Stops the supervisor and every child of it. */
int nefele_stop_supervisor(nefele_client *client, nefele_supervisor_id id);
/* Writes the id's text (s<node>.<life>.<n>, as nef prints it); 34 bytes suffice. */
int nefele_supervisor_id_to_string(nefele_supervisor_id id, char *buf, size_t len);

/* Messaging. A process started by Nefele inherits an endpoint: a connected socket
 * on the descriptor named by $NEFELE_FD (its pid, as text, is in $NEFELE_PID).
 * nefele_connect_self uses it; calls on it act as that process and no other.
 * A program outside Nefele connects with a token and names the process of its
 * tenant (on the agent's host) to act as with nefele_act_as. */
int nefele_connect_self(nefele_client **out);
int nefele_act_as(nefele_client *client, nefele_pid pid);
/* The process the client acts as; NEFELE_ENOTSELF if none. */
int nefele_self(nefele_client *client, nefele_pid *out);
/* Sends len bytes (waits for room at a full mailbox); returns once delivered or failed. */
int nefele_send(nefele_client *client, nefele_pid to, const void *data, size_t len);
int nefele_send_name(nefele_client *client, const char *name, const void *data, size_t len);
/* Sends to members of a group, picked by pattern; *reached (NULL: not wanted)
 * gets how many got it. */
#define NEFELE_PATTERN_MULTICAST 0    /* every member, once */
#define NEFELE_PATTERN_ANYCAST 1      /* one: the nearest, then the least loaded */
#define NEFELE_PATTERN_ROUND_ROBIN 2  /* one, each in turn */
#define NEFELE_PATTERN_LEAST_LOADED 3 /* one: the fewest messages waiting */
#define NEFELE_PATTERN_FAILOVER 4     /* the first live member in join order */
int nefele_send_group(nefele_client *client, const char *group, int pattern, const void *data,
                      size_t len, uint32_t *reached);
/* Every subscriber of topic gets it once, in the publisher's order. */
int nefele_publish(nefele_client *client, const char *topic, const void *data, size_t len,
                   uint32_t *reached);
/* Every process of the tenant. */
int nefele_broadcast(nefele_client *client, const void *data, size_t len, uint32_t *reached);
/* To a service outside the cluster through a proxy agent; what it sends back
 * arrives as NEFELE_MAIL_EXTERNAL mail. */
int nefele_send_external(nefele_client *client, const char *host, uint16_t port,
                         const void *data, size_t len);

/* One message, waiting up to timeout_ms (0: none): sender to *from, bytes to buf
 * (room for cap), their count to *len. NEFELE_ETIMEDOUT when none came;
 * NEFELE_ERANGE when it did not fit (dropped; *len says its size). Mail without
 * bytes (a monitor's, a lost name's, an external connection's end) arrives as an
 * empty message from the process concerned: nefele_recv_mail tells them apart. */
int nefele_recv(nefele_client *client, uint32_t timeout_ms, nefele_pid *from, void *buf,
                size_t cap, size_t *len);

#define NEFELE_MAIL_DATA 0            /* bytes in buf */
#define NEFELE_MAIL_DOWN 1            /* a monitored process (from) ended: down_* */
#define NEFELE_MAIL_NAME_LOST 2       /* a name of this process was taken: text */
#define NEFELE_MAIL_EXTERNAL 3        /* bytes from text:port, in buf */
#define NEFELE_MAIL_EXTERNAL_CLOSED 4 /* the connection to text:port ended: close_reason */
#define NEFELE_DOWN_EXITED 0          /* down_exit says how */
#define NEFELE_DOWN_LOST 1            /* lost with host down_host */
#define NEFELE_DOWN_UNREACHABLE 2     /* its host stopped answering */
#define NEFELE_DOWN_NO_PROCESS 3      /* it did not exist when the monitor was set */
#define NEFELE_CLOSE_CLOSED 0         /* closed or failed once open */
#define NEFELE_CLOSE_RESET 1          /* bytes to the proxy lost, not recovered */
#define NEFELE_CLOSE_OVERFLOW 2       /* this process did not take its bytes */
#define NEFELE_CLOSE_DROPPED 3        /* the proxy dropped it (full, or restarted) */
#define NEFELE_CLOSE_DENIED 4         /* the proxy's rules allow no address of it */
#define NEFELE_CLOSE_UNREACHABLE 5    /* the proxy could not connect */
#define NEFELE_CLOSE_OVERRUN 6        /* the service did not take the bytes */
typedef struct {
    int kind;              /* NEFELE_MAIL_* */
    nefele_pid from;       /* sender; DOWN: the process that ended; external: itself */
    int distance;          /* 0 same host, 1 same group, 2 same DC, 3 external */
    uint64_t seq;          /* position on its (sender, receiver) pair, from 0 */
    size_t len;            /* DATA, EXTERNAL: bytes (also when they did not fit) */
    int down_reason;       /* DOWN: NEFELE_DOWN_* */
    nefele_exit down_exit; /* DOWN, EXITED: how it ended */
    uint32_t down_host;    /* DOWN, LOST: its host */
    int close_reason;      /* EXTERNAL_CLOSED: NEFELE_CLOSE_* */
    uint16_t port;         /* EXTERNAL*: the external port */
    char text[256];        /* NAME_LOST: the name; EXTERNAL*: the host (NUL-terminated) */
} nefele_mail;
/* One mail of any kind, waiting up to timeout_ms (0: none); bytes to buf.
 * NEFELE_ETIMEDOUT when none came; NEFELE_ERANGE when its bytes did not fit
 * (dropped; *out is written, out->len says their size). */
int nefele_recv_mail(nefele_client *client, uint32_t timeout_ms, nefele_mail *out, void *buf,
                     size_t cap);
/* For a poll/epoll loop: nefele_arm asks for one mail without waiting; the
 * descriptor from nefele_fd turns readable when it comes (or after a few seconds
 * with none), or when a link made to the process brings something;
 * nefele_take_armed then gives it as nefele_recv_mail does (NEFELE_ETIMEDOUT:
 * none came). A mail from the agent disarms; one from a link leaves the receive
 * armed (nefele_arm again is then free). With links, nefele_take_armed never
 * waits for the agent's answer. The descriptor is the same for the client's
 * life, also after the agent restarted. */
int nefele_fd(nefele_client *client, int *fd);
int nefele_arm(nefele_client *client);
int nefele_take_armed(nefele_client *client, nefele_mail *out, void *buf, size_t cap);

int nefele_register(nefele_client *client, const char *name);
int nefele_unregister(nefele_client *client, const char *name);
int nefele_whereis(nefele_client *client, const char *name, nefele_pid *out);
int nefele_join(nefele_client *client, const char *group);
int nefele_leave(nefele_client *client, const char *group);
int nefele_subscribe(nefele_client *client, const char *topic);
int nefele_unsubscribe(nefele_client *client, const char *topic);
/* The mailbox of the process the client acts as gets NEFELE_MAIL_DOWN when
 * watched ends, is lost, or stops answering. */
int nefele_monitor(nefele_client *client, nefele_pid watched);
int nefele_demonitor(nefele_client *client, nefele_pid watched);
/* Links the process the client acts as to `to`: later at-most-once sends to
 * `to` go on a direct connection its agent made (sealed end to end when `to`
 * runs on another host), not through the agents, in order after the earlier ones; a send returns once
 * `to` has taken the message. `to` reads them with its mail (nefele_recv).
 * Fails as a send to `to` would, or NEFELE_EMSG when no link can be made. */
int nefele_link(nefele_client *client, nefele_pid to);
/* Closes the link to `to` once `to` took what was sent on it. */
int nefele_unlink(nefele_client *client, nefele_pid to);
/* How far `to` is: class to *distance (as nefele_mail.distance), the round trip
 * measured to hosts of that class to *rtt_ns (-1: none yet). Either may be NULL. */
int nefele_distance(nefele_client *client, nefele_pid to, int *distance, int64_t *rtt_ns);

const char *nefele_strerror(int code);
/* Writes the pid's text (up to 32 hex digits and a NUL) to buf; 33 bytes suffice. */
int nefele_pid_to_string(nefele_pid pid, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* NEFELE_H */
