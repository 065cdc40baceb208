/*
 * nice_peer: a libnice agent in Google compatibility mode, driven over
 * stdin/stdout, used by gshare's tests as the "real implementation" peer
 * (docs/protocol.md §F, §F.1). Built by tests/support/nice.rs with
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
 *   --ptcp-log          print libnice's PseudoTCP state changes (PTCP lines)
 *
 * HTTP modes (reliable only; the stream carries docs/protocol.md §D HTTP):
 *   --get PATH          HTTP client (file receiver): once writable, send
 *                       the §D.1 request for PATH (repeatable: one request
 *                       after the other on the keep-alive connection, as
 *                       libjingle does), read each response, hash its body
 *   --host HOST         Host header value (the sender's full JID + ":0")
 *   --user-agent UA     User-Agent value (default "Google Talk")
 *   --serve FILE        HTTP server (file sender): answer every request
 *                       whose directory part equals --source-path and whose
 *                       last segment, url-decoded as libjingle does (%xx in
 *                       either case, '+' = space), equals --name with
 *                       `HTTP/1.1 200` and FILE's bytes; anything else 404
 *   --source-path P     the offer's source-path (e.g. /temporary/<hex>/)
 *   --name N            the manifest <name> of FILE
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
 *   PTCP <message>             --ptcp-log: libnice's "State A -> B" lines
 *   HTTP-STATUS <line>         --get: a response's status line, as sent
 *   HTTP-HEADER <line>         a header line of the response (--get) or
 *                              of the request (--serve), as sent
 *   HTTP-BODY <status> SHA256 <hex> BYTES <n> SECONDS <t>
 *                              --get: a response body was read in full
 *                              (Content-Length bytes; 0 for 404)
 *   HTTP-DONE                  --get: every request was answered
 *   HTTP-REQUEST <line>        --serve: a request line, as sent
 *   HTTP-RESPONSE <status>     --serve: the status chosen (200 or 404)
 *   HTTP-SERVED <status> SHA256 <hex> BYTES <n> SECONDS <t>
 *                              --serve: the whole response was accepted by
 *                              nice_agent_send (body bytes and hash)
 *   HTTP-ERROR <text>          a malformed HTTP message; the peer stops
 *                              parsing
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
#include <pseudotcp.h>
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

/* HTTP (see the header comment) */
#define MAX_GETS 16
static const char *get_paths[MAX_GETS];
static int n_gets = 0, next_get = 0;
static const char *http_host = "localhost:0";
static const char *user_agent = "Google Talk";
static const char *serve_file = NULL, *source_path = NULL, *serve_name = NULL;
static GMappedFile *serve_map = NULL;
static gboolean http_broken = FALSE;
static GByteArray *http_in;          /* unparsed received bytes */
static GByteArray *out_head;         /* queued head bytes, then out_body */
static gsize out_head_off = 0;
static const guint8 *out_body = NULL;
static gsize out_body_len = 0, out_body_off = 0;
static gboolean out_active = FALSE;  /* a message is being flushed */
static int out_status = 0;
static gint64 out_start = 0;
static gboolean awaiting_response = FALSE;
static int resp_status = 0;
static gboolean in_body = FALSE;
static guint64 body_left = 0, body_total = 0;
static GChecksum *body_sum = NULL;
static gint64 body_start = 0;

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


/* ---- HTTP ---------------------------------------------------------- */

static gboolean http_client(void) { return n_gets > 0; }
static gboolean http_server(void) { return serve_file != NULL; }

static void http_error(const char *what)
{
    out("HTTP-ERROR %s", what);
    http_broken = TRUE;
}

/* Length of the head at the start of http_in (up to and including the
 * blank line), or 0 if it is not complete yet. Lines end in \n with an
 * optional \r. */
static gsize head_length(void)
{
    const guint8 *b = http_in->data;
    gsize n = http_in->len;
    for (gsize i = 0; i < n; i++) {
        if (b[i] != '\n')
            continue;
        if (i + 1 < n && b[i + 1] == '\n')
            return i + 2;
        if (i + 2 < n && b[i + 1] == '\r' && b[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

/* Splits a head into lines without their line ends. */
static gchar **head_lines(gsize len)
{
    gchar *text = g_strndup((const gchar *)http_in->data, len);
    gchar **lines = g_strsplit(text, "\n", -1);
    g_free(text);
    for (gchar **l = lines; *l; l++) {
        gsize k = strlen(*l);
        if (k > 0 && (*l)[k - 1] == '\r')
            (*l)[k - 1] = '\0';
    }
    return lines;
}

/* Content-Length of a head (-1 if absent or malformed). */
static gint64 content_length(gchar **lines)
{
    for (gchar **l = lines + 1; *l && **l; l++) {
        if (g_ascii_strncasecmp(*l, "Content-Length:", 15) == 0) {
            const char *v = *l + 15;
            while (*v == ' ' || *v == '\t')
                v++;
            gchar *end = NULL;
            guint64 n = g_ascii_strtoull(v, &end, 10);
            if (end == v || (*end && *end != ' ' && *end != '\t'))
                return -1;
            return (gint64)n;
        }
    }
    return -1;
}

/* Sends queued HTTP bytes until done or the socket is full. */
static void http_flush(void);

static void queue_message(GString *head, const guint8 *body, gsize body_len, int status)
{
    g_byte_array_set_size(out_head, 0);
    g_byte_array_append(out_head, (const guint8 *)head->str, (guint)head->len);
    out_head_off = 0;
    out_body = body;
    out_body_len = body_len;
    out_body_off = 0;
    out_active = TRUE;
    out_status = status;
    out_start = g_get_monotonic_time();
    http_flush();
}

static void send_next_get(void)
{
    if (next_get >= n_gets) {
        out("HTTP-DONE");
        return;
    }
    GString *req = g_string_new(NULL);
    g_string_append_printf(req,
                           "GET %s HTTP/1.1\r\n"
                           "Host: %s\r\n"
                           "Content-Length: 0\r\n"
                           "User-Agent: %s\r\n"
                           "Connection: Keep-Alive\r\n"
                           "\r\n",
                           get_paths[next_get], http_host, user_agent);
    next_get++;
    awaiting_response = TRUE;
    queue_message(req, NULL, 0, 0);
    g_string_free(req, TRUE);
}

/* libjingle url_decode: %xx (either case) and '+' = space. FALSE if a '%'
 * is not followed by two hex digits. */
static gboolean url_decode(const char *in, GString *out_s)
{
    for (const char *p = in; *p; p++) {
        if (*p == '%') {
            if (!g_ascii_isxdigit(p[1]) || !g_ascii_isxdigit(p[2]))
                return FALSE;
            g_string_append_c(out_s, (char)(g_ascii_xdigit_value(p[1]) * 16 +
                                            g_ascii_xdigit_value(p[2])));
            p += 2;
        } else if (*p == '+') {
            g_string_append_c(out_s, ' ');
        } else {
            g_string_append_c(out_s, *p);
        }
    }
    return TRUE;
}

/* Does a request target name the served file? */
static gboolean target_matches(const char *target)
{
    gchar *t = g_strdup(target);
    gchar *q = strchr(t, '?');
    if (q)
        *q = '\0';
    gchar *slash = strrchr(t, '/');
    gboolean ok = FALSE;
    if (slash) {
        gchar *segment = slash + 1;
        gchar saved = *segment;
        *segment = '\0';
        gboolean dir_ok = strcmp(t, source_path) == 0;
        *segment = saved;
        GString *name = g_string_new(NULL);
        ok = dir_ok && url_decode(segment, name) && strcmp(name->str, serve_name) == 0 &&
             name->len == strlen(serve_name);
        g_string_free(name, TRUE);
    }
    g_free(t);
    return ok;
}

/* Server: handle one complete request head of length len. */
static void serve_request(gsize len)
{
    gchar **lines = head_lines(len);
    out("HTTP-REQUEST %s", lines[0]);
    for (gchar **l = lines + 1; *l && **l; l++)
        out("HTTP-HEADER %s", *l);
    gint64 body = content_length(lines);
    gchar **f = g_strsplit(lines[0], " ", -1);
    gboolean get = g_strv_length(f) == 3 && strcmp(f[0], "GET") == 0 &&
                   g_str_has_prefix(f[2], "HTTP/1.");
    gboolean found = get && target_matches(f[1]);
    g_strfreev(f);
    g_strfreev(lines);
    /* Skip a request body (gshare and libjingle send Content-Length: 0). */
    gsize skip = len + (body > 0 ? (gsize)body : 0);
    if (skip > http_in->len) {
        http_error("request body longer than what arrived");
        return;
    }
    g_byte_array_remove_range(http_in, 0, (guint)skip);
    GString *head = g_string_new(NULL);
    if (found) {
        out("HTTP-RESPONSE 200");
        gsize size = g_mapped_file_get_length(serve_map);
        g_string_append_printf(head,
                               "HTTP/1.1 200\r\n"
                               "Connection: Keep-Alive\r\n"
                               "Content-Type: application/octet-stream\r\n"
                               "Content-Length: %" G_GSIZE_FORMAT "\r\n"
                               "\r\n",
                               size);
        queue_message(head, (const guint8 *)g_mapped_file_get_contents(serve_map), size, 200);
    } else {
        out("HTTP-RESPONSE 404");
        g_string_append(head, "HTTP/1.1 404\r\n"
                              "Connection: Keep-Alive\r\n"
                              "Content-Length: 0\r\n"
                              "\r\n");
        queue_message(head, NULL, 0, 404);
    }
    g_string_free(head, TRUE);
}

static void finish_body(void)
{
    double t = body_start ? (g_get_monotonic_time() - body_start) / 1e6 : 0.0;
    out("HTTP-BODY %d SHA256 %s BYTES %" G_GUINT64_FORMAT " SECONDS %.6f", resp_status,
        g_checksum_get_string(body_sum), body_total, t);
    print_cpu();
    in_body = FALSE;
    awaiting_response = FALSE;
    send_next_get();
}

/* Works through http_in as far as it goes. */
static void http_process(void)
{
    while (!http_broken) {
        if (http_client()) {
            if (in_body) {
                gsize take = http_in->len < body_left ? http_in->len : (gsize)body_left;
                if (take > 0) {
                    if (body_start == 0)
                        body_start = g_get_monotonic_time();
                    g_checksum_update(body_sum, http_in->data, (gssize)take);
                    g_byte_array_remove_range(http_in, 0, (guint)take);
                    body_left -= take;
                }
                if (body_left > 0)
                    return;
                finish_body();
                continue;
            }
            if (!awaiting_response) {
                if (http_in->len > 0)
                    http_error("bytes from the server with no request outstanding");
                return;
            }
            gsize len = head_length();
            if (len == 0)
                return;
            gchar **lines = head_lines(len);
            /* "HTTP/1.1 200" with or without a reason phrase (§D.2). */
            guint major = 0, minor = 0, status = 0;
            if (sscanf(lines[0], "HTTP/%u.%u %u", &major, &minor, &status) != 3) {
                g_strfreev(lines);
                http_error("bad status line");
                return;
            }
            out("HTTP-STATUS %s", lines[0]);
            for (gchar **l = lines + 1; *l && **l; l++)
                out("HTTP-HEADER %s", *l);
            gint64 cl = content_length(lines);
            g_strfreev(lines);
            g_byte_array_remove_range(http_in, 0, (guint)len);
            if (cl < 0) {
                http_error("response without Content-Length");
                return;
            }
            resp_status = (int)status;
            body_left = body_total = (guint64)cl;
            g_checksum_reset(body_sum);
            body_start = 0;
            in_body = TRUE;
            continue;
        }
        if (http_server()) {
            if (out_active)
                return; /* one response at a time */
            gsize len = head_length();
            if (len == 0)
                return;
            serve_request(len);
            continue;
        }
        return;
    }
}

static void http_flush(void)
{
    if (!out_active || !writable)
        return;
    while (out_head_off < out_head->len) {
        gint r = nice_agent_send(agent, stream_id, 1, out_head->len - (guint)out_head_off,
                                 (const gchar *)out_head->data + out_head_off);
        if (r <= 0) {
            writable = FALSE;
            return;
        }
        out_head_off += (gsize)r;
    }
    while (out_body_off < out_body_len) {
        gsize n = out_body_len - out_body_off;
        if (n > chunk)
            n = chunk;
        gint r = nice_agent_send(agent, stream_id, 1, (guint)n,
                                 (const gchar *)out_body + out_body_off);
        if (r <= 0) {
            writable = FALSE;
            return;
        }
        out_body_off += (gsize)r;
    }
    out_active = FALSE;
    if (http_server()) {
        gchar *sum = out_body_len
                         ? g_compute_checksum_for_data(G_CHECKSUM_SHA256, out_body, out_body_len)
                         : g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)"", 0);
        double t = (g_get_monotonic_time() - out_start) / 1e6;
        out("HTTP-SERVED %d SHA256 %s BYTES %" G_GSIZE_FORMAT " SECONDS %.6f", out_status, sum,
            out_body_len, t);
        print_cpu();
        g_free(sum);
        http_process(); /* a request that arrived meanwhile */
    }
}

static void http_writable(void)
{
    if (http_client() && next_get == 0)
        send_next_get();
    http_flush();
}

static void http_received(const gchar *buf, guint len)
{
    if (http_broken)
        return;
    g_byte_array_append(http_in, (const guint8 *)buf, len);
    http_process();
}

static void ptcp_log(const gchar *domain, GLogLevelFlags level, const gchar *message,
                     gpointer data)
{
    (void)domain; (void)level; (void)data;
    const char *state = strstr(message, "State ");
    if (state)
        out("PTCP %s", state);
}

static void recv_cb(NiceAgent *a, guint sid, guint cid, guint len, gchar *buf, gpointer data)
{
    (void)sid; (void)cid; (void)data;
    if (echo && !reliable) {
        nice_agent_send(a, stream_id, 1, len, buf);
        out("ECHO %u", len);
    }
    if (http_client() || http_server()) {
        http_received(buf, len);
        return;
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
    if (http_client() || http_server())
        http_writable();
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
    gboolean ptcp = FALSE;
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
        else if (!strcmp(a, "--ptcp-log")) ptcp = TRUE;
        else if (!strcmp(a, "--get") && v && n_gets < MAX_GETS) { get_paths[n_gets++] = v; i++; }
        else if (!strcmp(a, "--host") && v) { http_host = v; i++; }
        else if (!strcmp(a, "--user-agent") && v) { user_agent = v; i++; }
        else if (!strcmp(a, "--serve") && v) { serve_file = v; i++; }
        else if (!strcmp(a, "--source-path") && v) { source_path = v; i++; }
        else if (!strcmp(a, "--name") && v) { serve_name = v; i++; }
        else { fprintf(stderr, "nice_peer: unknown option %s\n", a); return 2; }
    }
    if ((n_gets > 0 || serve_file) && !reliable) {
        fprintf(stderr, "nice_peer: --get/--serve need --reliable\n");
        return 2;
    }
    if (n_gets > 0 && serve_file) {
        fprintf(stderr, "nice_peer: --get and --serve exclude each other\n");
        return 2;
    }
    if (serve_file) {
        GError *err = NULL;
        if (!source_path || !serve_name) {
            fprintf(stderr, "nice_peer: --serve needs --source-path and --name\n");
            return 2;
        }
        serve_map = g_mapped_file_new(serve_file, FALSE, &err);
        if (!serve_map) {
            fprintf(stderr, "nice_peer: %s: %s\n", serve_file, err->message);
            return 2;
        }
    }
    http_in = g_byte_array_new();
    out_head = g_byte_array_new();
    body_sum = g_checksum_new(G_CHECKSUM_SHA256);
    if (ptcp) {
        pseudo_tcp_set_debug_level(PSEUDO_TCP_DEBUG_NORMAL);
        g_log_set_handler("libnice-pseudotcp", G_LOG_LEVEL_MASK, ptcp_log, NULL);
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
