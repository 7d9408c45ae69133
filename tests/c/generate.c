/*
 * Generates through pimoe's C interface and prints every event, one per line, for
 * tests/c_abi.rs to compare with the Rust API's run of the same requests:
 *
 *     generate MODEL_DIR MANIFEST
 *
 * MODEL_DIR is a plain model (three requests batched in one session, one of them
 * cancelled midway); MANIFEST a composition whose expert fires (its tokens carry the
 * expert's name, inputs and outputs), once on a solvable and once on a singular
 * system (the answer then ends with the failure text, finish expert_failed). Before that it takes the error paths: a wrong
 * path, NULL arguments, invalid UTF-8, bad request values, an unknown request id.
 *
 * Output lines (REQ is the request's index in its run, text escaped as C would):
 *     run plain|composition
 *     token REQ ID llm "TEXT"
 *     token REQ ID expert NAME in N X... out M Y... "TEXT"     (numbers as %.17g)
 *     token REQ ID failed NAME "TEXT"       (text standing in for a failed result)
 *     note REQ "MESSAGE"
 *     finished REQ stop|length|context|expert_failed|non_finite prompt P generated G
 *         injected I expert_calls E expert_failures F
 *     error WHAT STATUS MESSAGE
 * The exit status is 0 when every error path gave the status it should.
 */
#include <stdio.h>
#include <stdlib.h>

#include "pimoe.h"

static int mismatches = 0;

/* Exits with the message when a call that must work fails. */
#define MUST(call)                                                                        \
    do {                                                                                  \
        pimoe_status must_ = (call);                                                      \
        if (must_ != PIMOE_OK) {                                                          \
            fprintf(stderr, "%s:%d: %s: %s: %s\n", __FILE__, __LINE__, #call,             \
                    pimoe_status_name(must_), pimoe_last_error());                        \
            exit(2);                                                                      \
        }                                                                                 \
    } while (0)

/* Prints an error path's outcome and counts it when the status is not the one wanted. */
static void expect(const char *what, pimoe_status got, pimoe_status want) {
    printf("error %s %s %s\n", what, pimoe_status_name(got), got == PIMOE_OK ? "" : pimoe_last_error());
    if (got != want) {
        fprintf(stderr, "%s: got %s, want %s\n", what, pimoe_status_name(got), pimoe_status_name(want));
        mismatches++;
    }
}

/* Printable ASCII as is, except \ and "; every other byte as \xNN. */
static void print_text(const char *text, size_t len) {
    size_t i;
    putchar('"');
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '\\' || c == '"') {
            printf("\\%c", c);
        } else if (c >= 0x20 && c < 0x7f) {
            putchar(c);
        } else {
            printf("\\x%02x", c);
        }
    }
    putchar('"');
}

static void print_values(const char *label, const double *v, size_t n) {
    size_t i;
    printf(" %s %lu", label, (unsigned long)n);
    for (i = 0; i < n; i++) {
        printf(" %.17g", v[i]);
    }
}

static int index_of(const uint64_t *ids, int n, uint64_t id) {
    int i;
    for (i = 0; i < n; i++) {
        if (ids[i] == id) {
            return i;
        }
    }
    fprintf(stderr, "an event for request %lu, which was not submitted\n", (unsigned long)id);
    exit(2);
}

/* Prints the session's events until it is idle; request `victim` (or -1) is cancelled
 * after its `after`-th token. */
static void drain(pimoe_session *session, const uint64_t *ids, int n, int victim, int after) {
    static const char *finish[] = {"none", "stop", "length", "context", "expert_failed", "non_finite"};
    pimoe_event ev;
    int victim_tokens = 0;
    for (;;) {
        int req;
        MUST(pimoe_session_next(session, &ev));
        if (ev.kind == PIMOE_EVENT_IDLE) {
            return;
        }
        req = index_of(ids, n, ev.request);
        switch (ev.kind) {
        case PIMOE_EVENT_TOKEN:
            printf("token %d %u ", req, ev.token);
            if (ev.expert == NULL) {
                printf("llm");
            } else if (ev.failed) {
                printf("failed %s", ev.expert);
            } else {
                printf("expert %s", ev.expert);
                print_values("in", ev.inputs, ev.inputs_len);
                print_values("out", ev.outputs, ev.outputs_len);
            }
            putchar(' ');
            print_text(ev.text, ev.text_len);
            putchar('\n');
            if (req == victim && ++victim_tokens == after) {
                MUST(pimoe_session_cancel(session, ev.request));
                expect("cancel-twice", pimoe_session_cancel(session, ev.request), PIMOE_ERR_ARGUMENT);
            }
            break;
        case PIMOE_EVENT_NOTE:
            printf("note %d ", req);
            print_text(ev.text, ev.text_len);
            putchar('\n');
            break;
        case PIMOE_EVENT_FINISHED:
            printf("finished %d %s prompt %lu generated %lu injected %lu expert_calls %lu expert_failures %lu\n",
                   req, finish[ev.finish], (unsigned long)ev.stats.prompt_tokens,
                   (unsigned long)ev.stats.generated_tokens, (unsigned long)ev.stats.injected_tokens,
                   (unsigned long)ev.stats.expert_calls, (unsigned long)ev.stats.expert_failures);
            break;
        default:
            fprintf(stderr, "unknown event kind %d\n", (int)ev.kind);
            exit(2);
        }
    }
}

static void engine_errors(const char *model) {
    static char poison;
    pimoe_engine *engine = (pimoe_engine *)&poison; /* must come back NULL */
    expect("missing-dir", pimoe_engine_load_model("/nonexistent/pimoe-model", PIMOE_DEVICE_CPU, &engine),
           PIMOE_ERR_IO);
    if (engine != NULL) {
        fprintf(stderr, "a failed load left a handle\n");
        mismatches++;
    }
    expect("null-path", pimoe_engine_load_model(NULL, PIMOE_DEVICE_CPU, &engine), PIMOE_ERR_ARGUMENT);
    expect("null-out", pimoe_engine_load_model(model, PIMOE_DEVICE_CPU, NULL), PIMOE_ERR_ARGUMENT);
    expect("bad-device", pimoe_engine_load_model(model, (pimoe_device)7, &engine), PIMOE_ERR_ARGUMENT);
    expect("bad-utf8-path", pimoe_engine_load_model("/tmp/\xff\xfe", PIMOE_DEVICE_CPU, &engine),
           PIMOE_ERR_ARGUMENT);
    expect("manifest-is-model", pimoe_engine_load_manifest(model, PIMOE_DEVICE_CPU, &engine), PIMOE_ERR_IO);
}

static void session_errors(pimoe_engine *engine, pimoe_session *session) {
    pimoe_request req = pimoe_request_default();
    pimoe_limits limits = pimoe_limits_default();
    pimoe_session *other;
    pimoe_event ev;
    uint64_t id;
    limits.max_running = 0;
    expect("zero-limit", pimoe_session_new(engine, &limits, &other), PIMOE_ERR_REQUEST);
    expect("null-engine", pimoe_session_new(NULL, NULL, &other), PIMOE_ERR_ARGUMENT);
    expect("null-request", pimoe_session_submit(session, NULL, &id), PIMOE_ERR_ARGUMENT);
    expect("null-prompt", pimoe_session_submit(session, &req, &id), PIMOE_ERR_ARGUMENT);
    req.prompt = "caf\xc3";
    expect("bad-utf8-prompt", pimoe_session_submit(session, &req, &id), PIMOE_ERR_ARGUMENT);
    req.prompt = "Hello";
    req.top_p = 0.0f;
    expect("zero-top-p", pimoe_session_submit(session, &req, &id), PIMOE_ERR_REQUEST);
    req.top_p = 1.0f;
    req.max_tokens = 0;
    expect("zero-max-tokens", pimoe_session_submit(session, &req, &id), PIMOE_ERR_REQUEST);
    req.max_tokens = 4;
    req.prompt = "";
    expect("empty-prompt", pimoe_session_submit(session, &req, &id), PIMOE_ERR_REQUEST);
    expect("cancel-unknown", pimoe_session_cancel(session, 999), PIMOE_ERR_ARGUMENT);
    expect("null-session", pimoe_session_next(NULL, &ev), PIMOE_ERR_ARGUMENT);
    expect("null-event", pimoe_session_next(session, NULL), PIMOE_ERR_ARGUMENT);
}

static void run_plain(const char *model, int device_choice, const char *label);

int main(int argc, char **argv) {
    pimoe_engine *engine;
    pimoe_session *session;
    pimoe_request req[2];
    uint64_t ids[2];
    const char *device;

    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s MODEL_DIR MANIFEST [CUDA_MODEL_DIR]\n", argv[0]);
        return 2;
    }
    printf("version %s abi %u\n", pimoe_version(), pimoe_abi_version());
    if (pimoe_abi_version() != PIMOE_ABI_VERSION) {
        fprintf(stderr, "header and library disagree on the ABI version\n");
        return 2;
    }
    engine_errors(argv[1]);

    MUST(pimoe_engine_load_model(argv[1], PIMOE_DEVICE_AUTO, &engine));
    MUST(pimoe_engine_device(engine, &device));
    printf("auto %s\n", device);
    pimoe_engine_free(engine);

    run_plain(argv[1], PIMOE_DEVICE_CPU, "plain");
    if (argc == 4) {
        /* The same on the CUDA backend (a GPU, or the PTX emulator with PIMOE_CUDA=emu). */
        run_plain(argv[3], PIMOE_DEVICE_CUDA, "cuda");
    }

    /* A composition whose router fires: the expert's tokens carry its numbers. */
    MUST(pimoe_engine_load_manifest(argv[2], PIMOE_DEVICE_CPU, &engine));
    MUST(pimoe_session_new(engine, NULL, &session));
    req[0] = pimoe_request_default();
    req[0].prompt = "Solve A = [2, 1, 1, 3] and b = [3, 5] for x.";
    req[0].max_tokens = 40;
    MUST(pimoe_session_submit(session, &req[0], &ids[0]));
    req[1] = req[0];
    req[1].prompt = "Solve A = [1, 2, 2, 4] and b = [3, 5].";
    MUST(pimoe_session_submit(session, &req[1], &ids[1]));
    printf("run composition\n");
    drain(session, ids, 2, -1, 0);
    pimoe_session_free(session);
    pimoe_engine_free(engine);

    printf("done %d\n", mismatches);
    return mismatches == 0 ? 0 : 1;
}

/* A plain model: three requests in one session; the third is cancelled after two tokens.
   The session's error paths are tried on the CPU run. */
static void run_plain(const char *model, int device_choice, const char *label) {
    pimoe_engine *engine;
    pimoe_session *session;
    pimoe_request req[3];
    pimoe_limits limits = pimoe_limits_default();
    uint64_t ids[3];
    const char *device;
    int i;

    MUST(pimoe_engine_load_model(model, device_choice, &engine));
    MUST(pimoe_engine_device(engine, &device));
    printf("%s device: %s\n", label, device);
    limits.max_step_tokens = 64;
    limits.max_running = 4;
    limits.kv_tokens = 256;
    MUST(pimoe_session_new(engine, &limits, &session));
    if (device_choice == PIMOE_DEVICE_CPU) {
        session_errors(engine, session);
    }
    for (i = 0; i < 3; i++) {
        req[i] = pimoe_request_default();
    }
    req[0].prompt = "Hello there";
    req[0].max_tokens = 12;
    req[0].temperature = 0.9f;
    req[0].top_k = 40;
    req[0].top_p = 0.95f;
    req[0].seed = 3;
    req[1].prompt = "Name a colour.";
    req[1].system = "You are terse.";
    req[1].max_tokens = 10;
    req[2].prompt = "one two three";
    req[2].chat = 1;
    req[2].max_tokens = 50;
    for (i = 0; i < 3; i++) {
        MUST(pimoe_session_submit(session, &req[i], &ids[i]));
    }
    /* The engine may go first: the session keeps the model. */
    pimoe_engine_free(engine);
    printf("run %s\n", label);
    drain(session, ids, 3, 2, 2);
    pimoe_session_free(session);
}
