/*
 * pimoe.h: the C interface of pimoe, a runtime for Physically-isolated Mixture of
 * Experts (an LLM that reasons, numerical experts that compute in f64, and a router
 * that switches between them inside one generation loop).
 *
 * C99; usable from C++. Link against libpimoe.so (cdylib) or libpimoe.a (staticlib),
 * both built by `cargo build --release` into target/release/. See README.md, "From C".
 *
 * The calls, in order:
 *
 *     pimoe_engine *engine;
 *     pimoe_engine_load_manifest("pimoe.json", PIMOE_DEVICE_AUTO, &engine);  (or _load_model)
 *     pimoe_session *session;
 *     pimoe_session_new(engine, NULL, &session);                  (NULL: default limits)
 *     pimoe_request req = pimoe_request_default();
 *     req.prompt = "Solve A = [2, 1, 1, 3] and b = [3, 5].";
 *     uint64_t id;
 *     pimoe_session_submit(session, &req, &id);                   (any number of requests)
 *     pimoe_event ev;
 *     while (pimoe_session_next(session, &ev) == PIMOE_OK && ev.kind != PIMOE_EVENT_IDLE) {
 *         ... ev.kind: PIMOE_EVENT_TOKEN, _NOTE or _FINISHED, for request ev.request ...
 *     }
 *     pimoe_session_free(session);
 *     pimoe_engine_free(engine);
 *
 * Errors. Every call that can fail returns a pimoe_status; PIMOE_OK is 0. On failure,
 * pimoe_last_error() gives a message naming what was wrong (the file, field, value or
 * argument), and any output handle is set to NULL. No call unwinds into C: an internal
 * bug is caught and returned as PIMOE_ERR_INTERNAL.
 *
 * Ownership. The library owns everything it hands out; the caller never frees a string
 * or array from it. Handles are freed with their own _free function, once; NULL is
 * accepted and ignored. What each pointer's lifetime is:
 *   - pimoe_version(), pimoe_status_name(): static.
 *   - pimoe_last_error(): until the next failing call on the same thread.
 *   - pimoe_engine_device(): until the engine is freed.
 *   - a pimoe_event's text, expert, inputs and outputs: until the next
 *     pimoe_session_next() or pimoe_session_free() on that session (copy what you keep).
 * An engine may be freed while its sessions live: they keep the model loaded until
 * the last of them is freed.
 *
 * Strings passed in are NUL-terminated UTF-8 (paths too); invalid UTF-8 is
 * PIMOE_ERR_ARGUMENT. Input pointers are only read during the call.
 *
 * Threads. Any handle may be passed between threads. One session must not be used by
 * two threads at once. Sessions of one CPU engine may run on different threads at the
 * same time; for an engine on the GPU that has not been checked yet, so use its
 * sessions from one thread at a time. pimoe_last_error() is per thread.
 */
#ifndef PIMOE_H
#define PIMOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The interface version this header declares; pimoe_abi_version() returns the
 * library's. They must be equal. */
#define PIMOE_ABI_VERSION 2u

typedef enum pimoe_status {
    PIMOE_OK = 0,
    /* A NULL pointer where one is required, invalid UTF-8, an unknown enum value, a
     * request id that is not running. */
    PIMOE_ERR_ARGUMENT = 1,
    /* A file or directory that cannot be read (a wrong path). */
    PIMOE_ERR_IO = 2,
    /* A model, manifest, weight or tokenizer file whose contents are wrong or
     * unsupported. */
    PIMOE_ERR_MODEL = 3,
    /* A request or limits the engine cannot serve: an empty or too long prompt, a bad
     * sampling parameter, max_tokens 0, a zero limit. */
    PIMOE_ERR_REQUEST = 4,
    /* PIMOE_DEVICE_CUDA without a usable GPU, or a device error while generating. */
    PIMOE_ERR_DEVICE = 5,
    /* The session stopped after an earlier failed step; only pimoe_session_free
     * remains. The message repeats the first error. */
    PIMOE_ERR_SESSION = 6,
    /* A bug in pimoe (a caught panic). A session it happened in is stopped. */
    PIMOE_ERR_INTERNAL = 7
} pimoe_status;

typedef enum pimoe_device {
    /* The GPU when the driver, a GPU and the kernels load, else the CPU;
     * pimoe_engine_device() says which and why. */
    PIMOE_DEVICE_AUTO = 0,
    PIMOE_DEVICE_CPU = 1,
    /* The GPU or PIMOE_ERR_DEVICE with the reason. */
    PIMOE_DEVICE_CUDA = 2,
    /* The CUDA backend on the PTX emulator (every kernel checked, on the CPU). */
    PIMOE_DEVICE_EMU = 3
} pimoe_device;

typedef enum pimoe_event_kind {
    /* No request is left in the session: every one finished or was cancelled. */
    PIMOE_EVENT_IDLE = 0,
    /* A token of an answer, with its text and provenance. */
    PIMOE_EVENT_TOKEN = 1,
    /* A line for the answer's trace that is not a token: an expert that could not run
     * (T2C found no number, a singular system, ...). */
    PIMOE_EVENT_NOTE = 2,
    /* The request ended; finish and stats are set. It sends nothing more. */
    PIMOE_EVENT_FINISHED = 3
} pimoe_event_kind;

typedef enum pimoe_finish {
    PIMOE_FINISH_NONE = 0,   /* not a PIMOE_EVENT_FINISHED */
    PIMOE_FINISH_STOP = 1,   /* the model ended its turn */
    PIMOE_FINISH_LENGTH = 2, /* max_tokens reached */
    PIMOE_FINISH_CONTEXT = 3, /* the context window (or the KV cache) is full */
    /* A fired expert could not compute its result: the answer ends with the
     * composition's failure text in its place (tokens with failed set); a
     * PIMOE_EVENT_NOTE before it says why. Not an answer to take as computed. */
    PIMOE_FINISH_EXPERT_FAILED = 4,
    /* The model's logits were NaN or infinite (broken weights or activations). */
    PIMOE_FINISH_NON_FINITE = 5
} pimoe_finish;

typedef struct pimoe_engine pimoe_engine;
typedef struct pimoe_session pimoe_session;

/* One request. Start from pimoe_request_default() and set prompt. */
typedef struct pimoe_request {
    const char *prompt;  /* required */
    const char *system;  /* a system message, or NULL; implies chat */
    int chat;            /* nonzero: the prompt is a user message in the model's chat format */
    uint32_t max_tokens; /* >= 1; counts generated and injected (expert) tokens; default 128 */
    float temperature;   /* 0: greedy (default) */
    uint32_t top_k;      /* 0: no top-k cut (default) */
    float top_p;         /* in (0, 1]; 1: no nucleus cut (default) */
    uint64_t seed;       /* sampling is reproducible for a seed; default 0 */
} pimoe_request;

/* A session's scheduler limits. Start from pimoe_limits_default(). */
typedef struct pimoe_limits {
    uint32_t max_step_tokens; /* tokens per step over all requests (default 512) */
    uint32_t max_running;     /* requests generating at once (default 64) */
    uint32_t kv_tokens;       /* KV cache capacity in tokens, allocated when the session is
                                 created (default 16384; at least 16); as in Rust, an
                                 allocation the machine cannot make aborts the process */
} pimoe_limits;

typedef struct pimoe_stats {
    uint64_t prompt_tokens;
    uint64_t generated_tokens; /* sampled from the LLM */
    uint64_t injected_tokens;  /* from expert results */
    uint64_t expert_calls;
    uint64_t expert_failures;  /* calls that gave no result (see PIMOE_FINISH_EXPERT_FAILED) */
    uint64_t processed_tokens; /* run through the model, recomputation included */
    double first_token_secs;   /* from submit */
    double total_secs;
} pimoe_stats;

/* One event of a session. Which fields are set depends on kind; the others are 0 or
 * NULL. The pointers live until the next pimoe_session_next() or pimoe_session_free(). */
typedef struct pimoe_event {
    pimoe_event_kind kind;
    uint64_t request; /* the id pimoe_session_submit gave */

    /* PIMOE_EVENT_TOKEN: the token id. */
    uint32_t token;
    /* PIMOE_EVENT_TOKEN: the text this token completes, UTF-8, text_len bytes plus a
     * terminating NUL; "" while a multi-byte character is still incomplete. A model
     * may generate a NUL byte: text_len, not strlen, is the length.
     * PIMOE_EVENT_NOTE: the message, the same way. */
    const char *text;
    size_t text_len;
    /* PIMOE_EVENT_TOKEN: NULL when the LLM produced the token; else the name of the
     * expert whose formatted result it is part of, with the inputs T2C gave it and the
     * outputs it returned (f64). Every token of one result carries the same values. */
    const char *expert;
    const double *inputs;
    size_t inputs_len;
    const double *outputs;
    size_t outputs_len;
    /* PIMOE_EVENT_TOKEN: nonzero when the token is part of the text standing in for a
     * result that expert could not compute (inputs and outputs are then NULL). */
    int failed;

    /* PIMOE_EVENT_FINISHED. */
    pimoe_finish finish;
    pimoe_stats stats;
} pimoe_event;

/* ---- library ---- */

uint32_t pimoe_abi_version(void);
const char *pimoe_version(void); /* the crate version, e.g. "0.1.0" */
const char *pimoe_status_name(pimoe_status status); /* "PIMOE_ERR_IO", ... */
/* The message of the last failed call on this thread ("" if none). */
const char *pimoe_last_error(void);

/* ---- engine: a model, or a PiMoE composition, loaded on a device ---- */

/* Loads a model directory (config.json, safetensors, tokenizer.json). */
pimoe_status pimoe_engine_load_model(const char *dir, pimoe_device device, pimoe_engine **out);
/* Loads a composition manifest (JSON: LLM, router, T2C, experts; see README.md). */
pimoe_status pimoe_engine_load_manifest(const char *path, pimoe_device device, pimoe_engine **out);
/* The line the CLI prints about the device: "device: cpu", "device: cuda (NAME)", or
 * "device: cpu (why PIMOE_DEVICE_AUTO did not use the GPU)". */
pimoe_status pimoe_engine_device(const pimoe_engine *engine, const char **out);
void pimoe_engine_free(pimoe_engine *engine);

/* ---- session: a scheduler batching any number of requests on one engine ---- */

pimoe_limits pimoe_limits_default(void);
/* limits may be NULL for the defaults. */
pimoe_status pimoe_session_new(const pimoe_engine *engine, const pimoe_limits *limits,
                               pimoe_session **out);

pimoe_request pimoe_request_default(void);
/* Queues a request and writes its id; its events come out of pimoe_session_next().
 * May be called at any time, also between events of other requests. */
pimoe_status pimoe_session_submit(pimoe_session *session, const pimoe_request *request,
                                  uint64_t *id);

/* Writes the session's next event, running scheduler steps (one token batch over all
 * running requests each) until there is one; PIMOE_EVENT_IDLE when no request is left.
 * A failed step stops the session (PIMOE_ERR_SESSION afterwards). */
pimoe_status pimoe_session_next(pimoe_session *session, pimoe_event *event);

/* Stops a request and frees its KV cache: no further event of it is delivered, not even
 * PIMOE_EVENT_FINISHED. PIMOE_ERR_ARGUMENT if it is not running (finished and its
 * PIMOE_EVENT_FINISHED delivered, cancelled, or never submitted). */
pimoe_status pimoe_session_cancel(pimoe_session *session, uint64_t id);

/* Frees the session and its requests, and the engine too if it was freed already. */
void pimoe_session_free(pimoe_session *session);

#ifdef __cplusplus
}
#endif

#endif /* PIMOE_H */
