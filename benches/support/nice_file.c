/*
 * nice_file: a libnice agent in Google compatibility mode with reliable
 * transport (libnice's PseudoTCP) that sends a file or receives one, for
 * gshare's end-to-end benchmark (benches/e2e.rs). It is the file-to-file
 * counterpart of tests/support/nice_peer.c (same stdin/stdout line protocol
 * for candidates), so the libnice figure measures the same job as gshare's:
 * read a file, move it, write it — and nothing else (no hashing in the
 * timed path; the benchmark checks the output afterwards).
 *
 * Built by benches/e2e.rs with  cc -O2 nice_file.c $(pkg-config --cflags --libs nice)
 *
 * Options
 *   --send-file PATH      once writable, send the whole file
 *   --recv-file PATH N    write the first N received bytes to PATH
 *   --controlling 0|1     controlling-mode (default 1; §F.1: both 1 is fastest)
 *   --chunk B             bytes per read()/nice_agent_send (default 65536)
 *
 * Output (stdout, one line each, flushed)
 *   CANDIDATE <ip> <port> <username> <password> <type>   ("-" = empty)
 *   GATHERED
 *   CONNECTED
 *   SENT BYTES <n> SECONDS <t>        all bytes accepted by nice_agent_send
 *   PROGRESS BYTES <n> SECONDS <t>    every 500 ms while receiving
 *   RECEIVED BYTES <n> SECONDS <t>    t = first to last received byte
 *   CPU USER <s> SYS <s>
 *   ERROR <text>
 * Input (stdin): CANDIDATE lines as above, QUIT.
 */
#include <agent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static NiceAgent *agent;
static GMainLoop *loop;
static guint stream_id;
static gboolean controlling = TRUE;
static gboolean have_remote_credentials = FALSE;
static gsize chunk = 65536;

static int send_fd = -1;
static gboolean writable = FALSE, send_done = FALSE, send_eof = FALSE;
static guint8 *send_buf;
static gsize send_len = 0, send_off = 0;
static guint64 sent = 0;
static gint64 send_start = 0;

static int recv_fd = -1;
static guint64 recv_total = 0, received = 0;
static gint64 recv_start = 0;
static gboolean recv_done = FALSE;

static void out(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

static void print_cpu(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        out("CPU USER %.3f SYS %.3f", ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
            ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
}

static void try_send(void)
{
    if (send_fd < 0 || send_done || !writable)
        return;
    if (send_start == 0)
        send_start = g_get_monotonic_time();
    for (;;) {
        if (send_off == send_len) {
            if (send_eof)
                break;
            ssize_t n = read(send_fd, send_buf, chunk);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                out("ERROR read: %s", strerror(errno));
                g_main_loop_quit(loop);
                return;
            }
            if (n == 0) {
                send_eof = TRUE;
                break;
            }
            send_len = (gsize)n;
            send_off = 0;
        }
        gint r = nice_agent_send(agent, stream_id, 1, (guint)(send_len - send_off),
                                 (const gchar *)send_buf + send_off);
        if (r <= 0) {
            writable = FALSE; /* wait for reliable-transport-writable */
            return;
        }
        send_off += (gsize)r;
        sent += (guint64)r;
    }
    send_done = TRUE;
    out("SENT BYTES %" G_GUINT64_FORMAT " SECONDS %.6f", sent,
        (g_get_monotonic_time() - send_start) / 1e6);
    print_cpu();
}

static void recv_cb(NiceAgent *a, guint sid, guint cid, guint len, gchar *buf, gpointer data)
{
    (void)a; (void)sid; (void)cid; (void)data;
    if (recv_fd < 0 || recv_done)
        return;
    if (recv_start == 0)
        recv_start = g_get_monotonic_time();
    guint64 take = recv_total - received;
    if (take > len)
        take = len;
    gsize off = 0;
    while (off < take) {
        ssize_t n = write(recv_fd, buf + off, (size_t)(take - off));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            out("ERROR write: %s", strerror(errno));
            g_main_loop_quit(loop);
            return;
        }
        off += (gsize)n;
    }
    received += take;
    if (received >= recv_total) {
        recv_done = TRUE;
        double t = (g_get_monotonic_time() - recv_start) / 1e6;
        close(recv_fd);
        recv_fd = -1;
        out("RECEIVED BYTES %" G_GUINT64_FORMAT " SECONDS %.6f", received, t);
        print_cpu();
    }
}

static gboolean progress_cb(gpointer data)
{
    (void)data;
    if (recv_done)
        return FALSE;
    if (recv_start != 0)
        out("PROGRESS BYTES %" G_GUINT64_FORMAT " SECONDS %.6f", received,
            (g_get_monotonic_time() - recv_start) / 1e6);
    return TRUE;
}

static const char *type_name(NiceCandidateType t)
{
    switch (t) {
    case NICE_CANDIDATE_TYPE_HOST: return "local";
    case NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE: return "stun";
    case NICE_CANDIDATE_TYPE_PEER_REFLEXIVE: return "stun";
    case NICE_CANDIDATE_TYPE_RELAYED: return "relay";
    }
    return "local";
}

static void gathering_done(NiceAgent *a, guint sid, gpointer data)
{
    (void)data;
    GSList *cands = nice_agent_get_local_candidates(a, sid, 1);
    for (GSList *i = cands; i; i = i->next) {
        NiceCandidate *c = i->data;
        gchar ip[NICE_ADDRESS_STRING_LEN];
        nice_address_to_string(&c->addr, ip);
        out("CANDIDATE %s %u %s %s %s", ip, nice_address_get_port(&c->addr),
            c->username && *c->username ? c->username : "-",
            c->password && *c->password ? c->password : "-", type_name(c->type));
    }
    g_slist_free_full(cands, (GDestroyNotify)nice_candidate_free);
    out("GATHERED");
}

static void state_changed(NiceAgent *a, guint sid, guint cid, guint state, gpointer data)
{
    (void)a; (void)sid; (void)cid; (void)data;
    if (state == NICE_COMPONENT_STATE_READY)
        out("CONNECTED");
    else if (state == NICE_COMPONENT_STATE_FAILED)
        out("ERROR ICE failed");
}

static void reliable_writable(NiceAgent *a, guint sid, guint cid, gpointer data)
{
    (void)a; (void)sid; (void)cid; (void)data;
    writable = TRUE;
    try_send();
}

static void add_remote(char **f)
{
    NiceCandidate *c = nice_candidate_new(NICE_CANDIDATE_TYPE_HOST);
    if (!nice_address_set_from_string(&c->addr, f[1])) {
        out("ERROR bad address %s", f[1]);
        nice_candidate_free(c);
        return;
    }
    nice_address_set_port(&c->addr, (guint)atoi(f[2]));
    c->transport = NICE_CANDIDATE_TRANSPORT_UDP;
    c->stream_id = stream_id;
    c->component_id = 1;
    c->username = g_strdup(strcmp(f[3], "-") ? f[3] : "");
    c->password = g_strdup(strcmp(f[4], "-") ? f[4] : "");
    c->priority = 1000;
    g_strlcpy(c->foundation, "1", sizeof c->foundation);
    GSList *list = g_slist_append(NULL, c);
    if (nice_agent_set_remote_candidates(agent, stream_id, 1, list) != 1)
        out("ERROR remote candidate %s:%s not added", f[1], f[2]);
    if (!have_remote_credentials) {
        /* docs/protocol.md §F.1: otherwise early checks are never replayed. */
        nice_agent_set_remote_credentials(agent, stream_id, c->username, c->password);
        have_remote_credentials = TRUE;
    }
    g_slist_free_full(list, (GDestroyNotify)nice_candidate_free);
}

static gboolean stdin_cb(GIOChannel *ch, GIOCondition cond, gpointer data)
{
    (void)cond; (void)data;
    gchar *line = NULL;
    gsize len = 0;
    GIOStatus st = g_io_channel_read_line(ch, &line, &len, NULL, NULL);
    if (st == G_IO_STATUS_EOF || st == G_IO_STATUS_ERROR) {
        g_main_loop_quit(loop);
        return FALSE;
    }
    if (st != G_IO_STATUS_NORMAL || !line)
        return TRUE;
    g_strchomp(line);
    if (g_str_has_prefix(line, "CANDIDATE ")) {
        char **f = g_strsplit(line, " ", 0);
        if (g_strv_length(f) >= 6)
            add_remote(f);
        g_strfreev(f);
    } else if (!strcmp(line, "QUIT")) {
        g_main_loop_quit(loop);
    }
    g_free(line);
    return TRUE;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--send-file") && v) {
            send_fd = open(v, O_RDONLY);
            if (send_fd < 0) { perror(v); return 1; }
            i++;
        } else if (!strcmp(a, "--recv-file") && v && i + 2 < argc) {
            recv_fd = open(v, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (recv_fd < 0) { perror(v); return 1; }
            recv_total = g_ascii_strtoull(argv[i + 2], NULL, 10);
            i += 2;
        } else if (!strcmp(a, "--controlling") && v) { controlling = atoi(v) != 0; i++; }
        else if (!strcmp(a, "--chunk") && v) { chunk = (gsize)g_ascii_strtoull(v, NULL, 10); i++; }
        else { fprintf(stderr, "nice_file: bad option %s\n", a); return 2; }
    }
    if (chunk == 0)
        chunk = 65536;
    send_buf = g_malloc(chunk);

    loop = g_main_loop_new(NULL, FALSE);
    GMainContext *ctx = g_main_loop_get_context(loop);
    agent = nice_agent_new_reliable(ctx, NICE_COMPATIBILITY_GOOGLE);
    g_object_set(agent, "upnp", FALSE, "controlling-mode", controlling, NULL);
    NiceAddress local;
    nice_address_init(&local);
    nice_address_set_from_string(&local, "127.0.0.1");
    nice_agent_add_local_address(agent, &local);

    g_signal_connect(agent, "candidate-gathering-done", G_CALLBACK(gathering_done), NULL);
    g_signal_connect(agent, "component-state-changed", G_CALLBACK(state_changed), NULL);
    g_signal_connect(agent, "reliable-transport-writable", G_CALLBACK(reliable_writable), NULL);

    stream_id = nice_agent_add_stream(agent, 1);
    nice_agent_attach_recv(agent, stream_id, 1, ctx, recv_cb, NULL);

    if (recv_fd >= 0)
        g_timeout_add(500, progress_cb, NULL);

    GIOChannel *in = g_io_channel_unix_new(0);
    g_io_add_watch(in, G_IO_IN | G_IO_HUP | G_IO_ERR, stdin_cb, NULL);

    if (!nice_agent_gather_candidates(agent, stream_id)) {
        out("ERROR gathering failed");
        return 1;
    }
    g_main_loop_run(loop);
    g_object_unref(agent);
    g_main_loop_unref(loop);
    return 0;
}
