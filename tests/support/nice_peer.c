/*
 * nice_peer: a libnice agent in Google compatibility mode, driven over
 * stdin/stdout, used by gshare's tests as the "real implementation" peer
 * (PROTOCOL.md §F, §F.1). Built by tests/support/nice.rs with
 *   cc -O2 nice_peer.c $(pkg-config --cflags --libs nice)
 *
 * Options
 *   --reliable          nice_agent_new_reliable (PseudoTCP over the pair);
 *                       default: plain datagrams (nice_agent_new)
 *   --controlling 0|1   controlling-mode property (default 1)
 *   --send N            once writable, send N bytes of the test stream
 *   --seed S            seed of the test stream (default 1)
 *   --recv N            expect N bytes; hash them
 *   --echo              (datagram mode) send every received datagram back
 *   --chunk B           bytes per nice_agent_send call (default 65536;
 *                       in datagram mode the datagram size, default 1000)
 *
 * The agent binds 127.0.0.1 only (nice_agent_add_local_address), UPnP off,
 * one stream with one component, receive callback attached.
 *
 * Output lines (stdout, flushed per line)
 *   CANDIDATE <ip> <port> <username> <password> <type>
 *       one per local candidate; password "-" when empty (libnice Google
 *       mode has none); type local|stun|relay
 *   GATHERED
 *   CONNECTED <local-ip> <local-port> <remote-ip> <remote-port>
 *       component READY, with the selected pair
 *   WRITABLE                   reliable mode: reliable-transport-writable
 *   FAILED                     component FAILED
 *   ECHO <len>                 --echo: a datagram was echoed
 *   SENT SHA256 <hex> BYTES <n> SECONDS <t>
 *       --send finished (all bytes accepted by nice_agent_send); t from the
 *       first send to the last accepted byte
 *   RECEIVED SHA256 <hex> BYTES <n> SECONDS <t>
 *       --recv finished; t from the first to the last received byte
 *   CPU USER <s> SYS <s>       after SENT/RECEIVED: the process's CPU time
 *
 * Input lines (stdin)
 *   CANDIDATE <ip> <port> <username> <password> <type>
 *       a remote candidate ("-" = empty password). After the first one is
 *       added, the stream's remote credentials are set from it: libnice
 *       0.1.21 in Google mode otherwise never replays checks that arrived
 *       before the candidates (set before adding it, libnice asserts).
 *   DATAGRAM <text>            send <text> as one datagram / stream bytes
 *   QUIT                       exit 0 (so does end of input)
 *
 * Test stream: xorshift64* with state x = seed (or 0x9E3779B97F4A7C15 if
 * seed is 0); per step x ^= x >> 12; x ^= x << 25; x ^= x >> 27; output
 * x * 0x2545F4914F6CDD1D as 8 little-endian bytes; the stream is the
 * concatenation of outputs, cut to N bytes. tests/support/nice.rs has the
 * same generator.
 */
#include <agent.h>
#include <glib.h>
#include <gio/gio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static NiceAgent *agent;
static GMainLoop *loop;
static guint stream_id;
static gboolean reliable = FALSE;
static gboolean controlling = TRUE;
static gboolean echo = FALSE;
static guint64 send_total = 0, recv_total = 0;
static guint64 seed = 1;
static gsize chunk = 0;
static gboolean have_remote_credentials = FALSE;

/* sending */
static gboolean connected = FALSE, writable = FALSE, send_done = FALSE;
static guint64 sent = 0;
static uint64_t gen_state;
static guint8 *send_buf;
static gsize send_len = 0, send_off = 0;
static GChecksum *send_sum;
static gint64 send_start = 0;

/* receiving */
static guint64 received = 0;
static GChecksum *recv_sum;
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

/* Process CPU time so far: throughput per CPU-second does not depend on
 * how busy the machine is. */
static void print_cpu(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        out("CPU USER %.3f SYS %.3f", ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
            ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
}

static uint64_t gen_next(void)
{
    uint64_t x = gen_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    gen_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Fills send_buf with the next min(chunk, remaining) stream bytes. chunk is
 * a multiple of 8, so only the last refill cuts an output short. */
static void refill(void)
{
    guint64 left = send_total - sent;
    gsize n = left < chunk ? (gsize)left : chunk;
    for (gsize i = 0; i < n; i += 8) {
        uint64_t v = gen_next();
        for (gsize j = 0; j < 8 && i + j < n; j++)
            send_buf[i + j] = (guint8)(v >> (8 * j));
    }
    send_len = n;
    send_off = 0;
}

static void try_send(void)
{
    if (send_done || !connected || (reliable && !writable))
        return;
    if (send_start == 0)
        send_start = g_get_monotonic_time();
    while (sent < send_total) {
        if (send_off == send_len)
            refill();
        gint r = nice_agent_send(agent, stream_id, 1, (guint)(send_len - send_off),
                                 (const gchar *)send_buf + send_off);
        if (r <= 0) {
            if (!reliable) {
                /* Datagram mode: socket full; retry from an idle source. */
                return;
            }
            writable = FALSE; /* wait for reliable-transport-writable */
            return;
        }
        g_checksum_update(send_sum, send_buf + send_off, r);
        send_off += r;
        sent += r;
    }
    send_done = TRUE;
    double t = (g_get_monotonic_time() - send_start) / 1e6;
    out("SENT SHA256 %s BYTES %" G_GUINT64_FORMAT " SECONDS %.6f",
        g_checksum_get_string(send_sum), sent, t);
    print_cpu();
}

static gboolean send_idle(gpointer data)
{
    (void)data;
    try_send();
    return !send_done && !reliable;
}

static void recv_cb(NiceAgent *a, guint sid, guint cid, guint len, gchar *buf, gpointer data)
{
    (void)sid; (void)cid; (void)data;
    if (echo && !reliable) {
        nice_agent_send(a, stream_id, 1, len, buf);
        out("ECHO %u", len);
    }
    if (recv_total == 0 || recv_done)
        return;
    if (recv_start == 0)
        recv_start = g_get_monotonic_time();
    guint64 take = recv_total - received;
    if (take > len)
        take = len;
    g_checksum_update(recv_sum, (const guchar *)buf, (gssize)take);
    received += take;
    if (received >= recv_total) {
        recv_done = TRUE;
        double t = (g_get_monotonic_time() - recv_start) / 1e6;
        out("RECEIVED SHA256 %s BYTES %" G_GUINT64_FORMAT " SECONDS %.6f",
            g_checksum_get_string(recv_sum), received, t);
        print_cpu();
    }
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
    (void)data;
    if (state == NICE_COMPONENT_STATE_READY && !connected) {
        NiceCandidate *l = NULL, *r = NULL;
        gchar lip[NICE_ADDRESS_STRING_LEN] = "?", rip[NICE_ADDRESS_STRING_LEN] = "?";
        guint lport = 0, rport = 0;
        if (nice_agent_get_selected_pair(a, sid, cid, &l, &r)) {
            nice_address_to_string(&l->addr, lip);
            nice_address_to_string(&r->addr, rip);
            lport = nice_address_get_port(&l->addr);
            rport = nice_address_get_port(&r->addr);
        }
        connected = TRUE;
        out("CONNECTED %s %u %s %u", lip, lport, rip, rport);
        if (!reliable && send_total > 0)
            g_idle_add(send_idle, NULL);
        try_send();
    } else if (state == NICE_COMPONENT_STATE_FAILED) {
        out("FAILED");
    }
}

static void reliable_writable(NiceAgent *a, guint sid, guint cid, gpointer data)
{
    (void)a; (void)sid; (void)cid; (void)data;
    if (!writable && !connected) {
        /* Writable before READY was reported: still counts. */
        connected = TRUE;
    }
    if (!writable && sent == 0)
        out("WRITABLE");
    writable = TRUE;
    try_send();
}

static NiceCandidateType parse_type(const char *s)
{
    if (!strcmp(s, "stun") || !strcmp(s, "srflx"))
        return NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE;
    if (!strcmp(s, "prflx"))
        return NICE_CANDIDATE_TYPE_PEER_REFLEXIVE;
    if (!strcmp(s, "relay"))
        return NICE_CANDIDATE_TYPE_RELAYED;
    return NICE_CANDIDATE_TYPE_HOST;
}

static void add_remote(char **f)
{
    NiceCandidate *c = nice_candidate_new(parse_type(f[5]));
    if (!nice_address_set_from_string(&c->addr, f[1])) {
        fprintf(stderr, "nice_peer: bad address %s\n", f[1]);
        nice_candidate_free(c);
        return;
    }
    nice_address_set_port(&c->addr, (guint)atoi(f[2]));
    c->transport = NICE_CANDIDATE_TRANSPORT_UDP;
    c->stream_id = stream_id;
    c->component_id = 1;
    c->username = g_strdup(strcmp(f[3], "-") ? f[3] : "");
    c->password = g_strdup(strcmp(f[4], "-") ? f[4] : "");
    switch (c->type) {
    case NICE_CANDIDATE_TYPE_HOST: c->priority = 1000; break;
    case NICE_CANDIDATE_TYPE_RELAYED: c->priority = 500; break;
    default: c->priority = 900; break;
    }
    g_strlcpy(c->foundation, "1", sizeof c->foundation);
    GSList *list = g_slist_append(NULL, c);
    int n = nice_agent_set_remote_candidates(agent, stream_id, 1, list);
    if (n != 1)
        fprintf(stderr, "nice_peer: remote candidate %s:%s not added (%d)\n", f[1], f[2], n);
    if (!have_remote_credentials) {
        /* §F.1: without this, checks that arrived early are never replayed.
         * Set after the candidate: set first, the replay turns our peer's
         * address into a peer-reflexive candidate, and adding the same
         * address as a host candidate afterwards trips an assertion in
         * libnice 0.1.21 (priv_add_remote_candidate, selected_pair.local). */
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
        else
            fprintf(stderr, "nice_peer: bad line: %s\n", line);
        g_strfreev(f);
    } else if (g_str_has_prefix(line, "DATAGRAM ")) {
        const char *text = line + strlen("DATAGRAM ");
        nice_agent_send(agent, stream_id, 1, (guint)strlen(text), text);
    } else if (!strcmp(line, "QUIT")) {
        g_main_loop_quit(loop);
    } else if (*line) {
        fprintf(stderr, "nice_peer: unknown line: %s\n", line);
    }
    g_free(line);
    return TRUE;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--reliable")) reliable = TRUE;
        else if (!strcmp(a, "--echo")) echo = TRUE;
        else if (!strcmp(a, "--controlling") && v) { controlling = atoi(v) != 0; i++; }
        else if (!strcmp(a, "--send") && v) { send_total = g_ascii_strtoull(v, NULL, 10); i++; }
        else if (!strcmp(a, "--recv") && v) { recv_total = g_ascii_strtoull(v, NULL, 10); i++; }
        else if (!strcmp(a, "--seed") && v) { seed = g_ascii_strtoull(v, NULL, 10); i++; }
        else if (!strcmp(a, "--chunk") && v) { chunk = (gsize)g_ascii_strtoull(v, NULL, 10); i++; }
        else { fprintf(stderr, "nice_peer: unknown option %s\n", a); return 2; }
    }
    if (chunk == 0)
        chunk = reliable ? 65536 : 1000;
    chunk = (chunk + 7) & ~(gsize)7;
    gen_state = seed ? seed : 0x9E3779B97F4A7C15ULL;
    send_buf = g_malloc(chunk);
    send_sum = g_checksum_new(G_CHECKSUM_SHA256);
    recv_sum = g_checksum_new(G_CHECKSUM_SHA256);

    loop = g_main_loop_new(NULL, FALSE);
    GMainContext *ctx = g_main_loop_get_context(loop);
    agent = reliable ? nice_agent_new_reliable(ctx, NICE_COMPATIBILITY_GOOGLE)
                     : nice_agent_new(ctx, NICE_COMPATIBILITY_GOOGLE);
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

    GIOChannel *in = g_io_channel_unix_new(0);
    g_io_add_watch(in, G_IO_IN | G_IO_HUP | G_IO_ERR, stdin_cb, NULL);

    if (!nice_agent_gather_candidates(agent, stream_id)) {
        fprintf(stderr, "nice_peer: gathering failed\n");
        return 1;
    }
    g_main_loop_run(loop);
    g_object_unref(agent);
    g_main_loop_unref(loop);
    return 0;
}
