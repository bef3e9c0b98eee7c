/* SSE subscribers for the fan-out bench (bench/sse_clients.py compiles and runs this).

   The Python subscribers this replaces spent as much CPU per delivery as the ingress did, on the
   same 2 cores, so the bench measured the sum of both. One epoll loop in C reads 5,000 streams for
   a small fraction of that.

   usage: sse_clients [-w window] [-a attempts] [-t deadline_s] HOST PORT PATH COUNT MARKER [HEADER...]

   Opens COUNT streams (GET PATH, each HEADER a "Name: value" line), at most `window` of them
   waiting for their response head at once. A stream that fails (connect error, a status other
   than 200, the stream ending) is opened again after its Retry-After (0.5 s without one), up to
   `attempts` times in all. Prints
     READY <connected>                  once every stream has answered 200 or failed for good
     {"received":[...],"failures":{...},"retries":{...}}
                                        once every stream has seen a `data:` line with MARKER and
                                        "role":"agent" (CLOCK_REALTIME seconds of its receipt) or
                                        failed, or the deadline passed (counted as "timeout")
   then keeps the streams open, without reading them, until stdin closes, so no teardown competes
   with a delivery still under way on another process's streams. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum phase { WAITING, CONNECTING, HEAD, BODY, RECEIVED, FAILED };
enum chunk { SIZE_LINE, DATA, DATA_END };

struct conn {
    int fd;
    enum phase phase;
    int attempts;
    int answered; /* 200 at least once */
    int settled;  /* answered, or failed for good */
    double retry_at;
    /* undecoded bytes from the socket that did not yet make a whole head or chunk-size line */
    char *raw;
    size_t raw_len, raw_cap;
    /* the decoded body's current, unfinished line */
    char *line;
    size_t line_len, line_cap;
    int chunked;
    enum chunk chunk;
    size_t chunk_left;
    double received_at;
};

struct tally {
    char name[64];
    int count;
};
#define NAMES 32

static struct conn *conns;
static int count, window = 256, max_attempts = 4, pending, settled, answered, finished, waiting;
static double deadline_s = 110;
static const char *marker;
static char request[8192];
static size_t request_len;
static struct addrinfo *address;
static int epfd;
static struct tally failures[NAMES], retries[NAMES];

static double clock_s(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void count_name(struct tally *table, const char *name) {
    for (int i = 0; i < NAMES; i++) {
        if (table[i].count == 0) snprintf(table[i].name, sizeof table[i].name, "%s", name);
        if (strcmp(table[i].name, name) == 0) {
            table[i].count++;
            return;
        }
    }
}

static void append(char **buf, size_t *len, size_t *cap, const char *data, size_t n) {
    if (*len + n > *cap) {
        *cap = (*len + n) * 2;
        *buf = realloc(*buf, *cap);
        if (!*buf) {
            perror("realloc");
            exit(2);
        }
    }
    memcpy(*buf + *len, data, n);
    *len += n;
}

static void close_stream(struct conn *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->raw_len = c->line_len = 0;
    if (c->phase == CONNECTING || c->phase == HEAD) pending--;
}

static void settle(struct conn *c) {
    settled += !c->settled;
    c->settled = 1;
}

/* A failed attempt: tried again after `retry_after` seconds, or counted as failed for good. */
static void fail(struct conn *c, const char *name, double retry_after) {
    close_stream(c);
    if (++c->attempts >= max_attempts) {
        count_name(failures, name);
        settle(c);
        c->phase = FAILED;
        finished++;
        return;
    }
    count_name(retries, name);
    c->phase = WAITING;
    c->retry_at = clock_s(CLOCK_MONOTONIC) + retry_after;
    waiting++;
}

static void fail_errno(struct conn *c, int err) { fail(c, strerror(err), 0.5); }

static void open_stream(struct conn *c) {
    c->fd = socket(address->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        perror("socket");
        exit(2);
    }
    c->phase = CONNECTING;
    pending++;
    if (connect(c->fd, address->ai_addr, address->ai_addrlen) < 0 && errno != EINPROGRESS) {
        fail_errno(c, errno);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void on_line(struct conn *c, const char *line, size_t n) {
    if (n >= 5 && memcmp(line, "data:", 5) == 0 && memmem(line, n, marker, strlen(marker)) &&
        memmem(line, n, "\"role\":\"agent\"", 14)) {
        c->received_at = clock_s(CLOCK_REALTIME);
        c->phase = RECEIVED;
        finished++;
        /* The rest of the turn stays in the kernel's buffers: reading it would be client CPU spent
           after this stream's figure is taken. */
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    }
}

/* Decoded body bytes: split into lines, whatever read or chunk boundaries cut them. */
static void on_body(struct conn *c, const char *data, size_t n) {
    while (n > 0 && c->phase == BODY) {
        const char *end = memchr(data, '\n', n);
        size_t take = end ? (size_t)(end - data) + 1 : n;
        if (end && c->line_len == 0) {
            on_line(c, data, take);
        } else {
            append(&c->line, &c->line_len, &c->line_cap, data, take);
            if (end) {
                on_line(c, c->line, c->line_len);
                c->line_len = 0;
            }
        }
        data += take;
        n -= take;
    }
}

/* The status line and headers, once all of them are in; returns the bytes they took, 0 if more
   are needed. */
static size_t on_head(struct conn *c, const char *buf, size_t len) {
    const char *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t used = (size_t)(end - buf) + 4;
    int status = 0;
    double retry_after = 0.5;
    c->chunked = 0;
    sscanf(buf, "HTTP/1.%*d %d", &status);
    for (const char *p = memchr(buf, '\n', used); p && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
        p++;
        if (strncasecmp(p, "transfer-encoding:", 18) == 0 && memmem(p, (size_t)(end - p), "chunked", 7))
            c->chunked = 1;
        else if (strncasecmp(p, "retry-after:", 12) == 0)
            retry_after = atof(p + 12);
    }
    if (status != 200) {
        char name[32];
        snprintf(name, sizeof name, "HTTP %d", status);
        fail(c, name, retry_after);
        return 0;
    }
    pending--;
    answered += !c->answered;
    c->answered = 1;
    settle(c);
    c->phase = BODY;
    c->chunk = SIZE_LINE;
    return used;
}

/* Everything in c->raw that can be handled now; what is left is an unfinished head or size line. */
static void consume(struct conn *c) {
    size_t at = 0;
    while (at < c->raw_len && (c->phase == HEAD || c->phase == BODY)) {
        char *p = c->raw + at;
        size_t left = c->raw_len - at;
        if (c->phase == HEAD) {
            size_t used = on_head(c, p, left);
            if (!used) break;
            at += used;
        } else if (!c->chunked) {
            on_body(c, p, left);
            at += left;
        } else if (c->chunk == SIZE_LINE) {
            char *eol = memmem(p, left, "\r\n", 2);
            if (!eol) break;
            c->chunk_left = strtoul(p, NULL, 16);
            at += (size_t)(eol - p) + 2;
            if (c->chunk_left == 0) {
                fail(c, "stream ended before the reply", 0.5);
                return;
            }
            c->chunk = DATA;
        } else if (c->chunk == DATA) {
            size_t take = left < c->chunk_left ? left : c->chunk_left;
            on_body(c, p, take);
            at += take;
            if ((c->chunk_left -= take) == 0) c->chunk = DATA_END;
        } else {
            if (left < 2) break;
            at += 2;
            c->chunk = SIZE_LINE;
        }
    }
    if (c->fd < 0) return; /* failed above: its buffers are reset */
    memmove(c->raw, c->raw + at, c->raw_len - at);
    c->raw_len -= at;
}

static void on_writable(struct conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        fail_errno(c, err);
        return;
    }
    ssize_t sent = send(c->fd, request, request_len, MSG_NOSIGNAL);
    if (sent < 0) {
        fail_errno(c, errno);
        return;
    }
    if ((size_t)sent < request_len) { /* a fresh socket's buffer takes a request head whole */
        fail(c, "short write", 0.5);
        return;
    }
    c->phase = HEAD;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void on_readable(struct conn *c) {
    static char buf[65536];
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n < 0) {
        fail_errno(c, errno);
        return;
    }
    if (n == 0) {
        fail(c, c->phase == HEAD ? "closed before the response" : "stream ended before the reply", 0.5);
        return;
    }
    append(&c->raw, &c->raw_len, &c->raw_cap, buf, (size_t)n);
    consume(c);
}

/* Streams due to be opened, within the window of those waiting for their response head. */
static void open_due(int *fresh) {
    double now = clock_s(CLOCK_MONOTONIC);
    for (int i = 0; waiting && i < count && pending < window; i++)
        if (conns[i].phase == WAITING && conns[i].attempts > 0 && conns[i].retry_at <= now) {
            waiting--;
            open_stream(&conns[i]);
        }
    while (*fresh < count && pending < window) open_stream(&conns[(*fresh)++]);
}

static void print_tally(const char *key, const struct tally *table) {
    printf(",\"%s\":{", key);
    for (int i = 0; i < NAMES && table[i].count; i++)
        printf("%s\"%s\":%d", i ? "," : "", table[i].name, table[i].count);
    printf("}");
}

static void report(void) {
    printf("{\"received\":[");
    const char *sep = "";
    for (int i = 0; i < count; i++)
        if (conns[i].phase == RECEIVED) {
            printf("%s%.6f", sep, conns[i].received_at);
            sep = ",";
        }
    printf("]");
    print_tally("failures", failures);
    print_tally("retries", retries);
    printf("}\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "w:a:t:")) != -1) {
        if (opt == 'w') window = atoi(optarg);
        else if (opt == 'a') max_attempts = atoi(optarg);
        else if (opt == 't') deadline_s = atof(optarg);
        else return 2;
    }
    if (argc - optind < 5) {
        fprintf(stderr, "usage: %s [-w window] [-a attempts] [-t deadline_s] HOST PORT PATH COUNT MARKER [HEADER...]\n", argv[0]);
        return 2;
    }
    const char *host = argv[optind], *port = argv[optind + 1], *path = argv[optind + 2];
    count = atoi(argv[optind + 3]);
    marker = argv[optind + 4];
    int len = snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: %s:%s\r\nAccept: text/event-stream\r\n", path, host, port);
    for (int i = optind + 5; i < argc && len < (int)sizeof request; i++)
        len += snprintf(request + len, sizeof request - len, "%s\r\n", argv[i]);
    len += snprintf(request + len, sizeof request - len, "\r\n");
    if (len >= (int)sizeof request) {
        fprintf(stderr, "request head over %zu bytes\n", sizeof request);
        return 2;
    }
    request_len = (size_t)len;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int gai = getaddrinfo(host, port, &hints, &address);
    if (gai) {
        fprintf(stderr, "%s:%s: %s\n", host, port, gai_strerror(gai));
        return 2;
    }
    struct rlimit files;
    getrlimit(RLIMIT_NOFILE, &files);
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
    if (files.rlim_cur < (rlim_t)count + 16) {
        fprintf(stderr, "%d streams need %d open files; the hard limit is %lu (ulimit -Hn)\n", count, count + 16,
                (unsigned long)files.rlim_cur);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    conns = calloc((size_t)count, sizeof *conns);
    for (int i = 0; i < count; i++) conns[i].fd = -1;
    epfd = epoll_create1(EPOLL_CLOEXEC);

    double deadline = clock_s(CLOCK_MONOTONIC) + deadline_s;
    int fresh = 0, ready = 0;
    struct epoll_event events[1024];
    while (finished < count && clock_s(CLOCK_MONOTONIC) < deadline) {
        open_due(&fresh);
        if (!ready && settled == count) {
            printf("READY %d\n", answered);
            fflush(stdout);
            ready = 1;
        }
        int n = epoll_wait(epfd, events, 1024, waiting ? 20 : 200);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->phase == CONNECTING) on_writable(c);
            else if (c->phase == HEAD || c->phase == BODY) on_readable(c);
        }
    }
    if (!ready) {
        printf("READY %d\n", answered);
        fflush(stdout);
    }
    for (int i = 0; i < count; i++)
        if (conns[i].phase != RECEIVED && conns[i].phase != FAILED) count_name(failures, "timeout");
    report();
    /* Hold the streams until the bench has read every figure: stdin closes. */
    char sink[256];
    while (read(STDIN_FILENO, sink, sizeof sink) > 0) {}
    return 0;
}
