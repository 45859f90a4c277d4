/*
 * cmd_train.c — `engram train CONFIG [key=value ...]` and `engram eval CHECKPOINT ...`: the driver.
 * Runs at any P under mpirun or srun (one process works too). The run directory
 * <run.dir>/<run.name>/ holds config.yaml (resolved), metrics.jsonl (one JSON object per step and
 * per evaluation), train.log (the progress lines) and checkpoints/; a run resumes on its own from
 * checkpoints/latest. Long but linear: set-up, the loop, the end.
 *
 * Exit status: 0 done; 2 bad input (one line says what and where); 3 stopped after
 * train.max_bad_steps non-finite steps in a row (the last good checkpoint is intact); 75 stopped by
 * SIGTERM/SIGUSR1 after writing a checkpoint (job scripts requeue on it).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "checkpoint_file.h"
#include "cli.h"
#include "comm.h"
#include "common.h"
#include "compress.h"
#include "dataset.h"
#include "device.h"
#include "grad_sync.h"
#include "sha256.h"
#include "shard.h"
#include "tokenizer.h"
#include "train.h"

#define EXIT_BAD_STEPS 3
#define EXIT_PREEMPTED 75

/* ---- failing together ------------------------------------------------------------------------ */

/* A verdict every rank reaches alike (the same config and sizes everywhere): rank 0 says it, and
 * all ranks leave together. Anything one rank may find alone goes through agree_ instead. */
static void fail_(const Comm* w, const char* fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void fail_(const Comm* w, const char* fmt, ...) {
    if (w->rank == 0) {
        va_list ap;
        va_start(ap, fmt);
        engram_vsay(fmt, ap);
        va_end(ap);
    }
    comm_free((Comm*)w);
    exit(ENGRAM_EXIT_USAGE);
}

/* This rank's share of the global batch; a batch smaller than the ranks is refused by every rank. */
static void batch_share_(const Comm* w, const Config* c, const char* file, int* first, int* count) {
    char err[512];
    if (shard_batch_refused(c->train.batch_size, w->size, file, err, sizeof err)) fail_(w, "%s", err);
    shard_batch_range(c->train.batch_size, w->size, w->rank, first, count);
}

/* A verdict some ranks may reach alone (a file one node cannot read, a tokenizer that differs, or
 * one only rank 0 looked at), its reason in fmt where failed: the lowest failing rank's reason is
 * said once (named by its rank where that is not 0) and all ranks leave together (comm_agree). */
static void agree_(const Comm* w, int failed, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
static void agree_(const Comm* w, int failed, const char* fmt, ...) {
    char msg[8192] = "";
    if (failed) {
        int at = w->rank ? snprintf(msg, sizeof msg, "rank %d: ", w->rank) : 0;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg + at, sizeof msg - at, fmt, ap);
        va_end(ap);
    }
    if (comm_agree(w->comm, failed, msg, sizeof msg) >= 0) fail_(w, "%s", msg);
}

/* What every rank must hold alike but reads from its own file system (the config, the tokenizer,
 * the token shards), summed up in a short text (a digest, a count): refused together where any
 * rank's differs from rank 0's, which would otherwise train on in silence with ranks that disagree. */
static void agree_same_(const Comm* w, const char* what, const char* mine, const char* hint) {
    char ref[96];
    snprintf(ref, sizeof ref, "%s", mine);
    mpiCheck(MPI_Bcast(ref, sizeof ref, MPI_CHAR, 0, w->comm));
    agree_(w, strncmp(ref, mine, sizeof ref - 1) != 0, "%s differs from rank 0's (%s here, %s there); %s", what, mine,
           ref, hint);
}

/* The checkpoint path names (a file, or a directory's newest) as rank 0 finds it, on every rank:
 * `latest` may change while a run writes beside it, and all ranks must read one file. 0 with its
 * name in file, or -1 with rank 0's reason in err. */
static int resolve_agreed_(const Comm* w, const char* path, char* file, size_t n, char* err, size_t errlen) {
    int rc = w->rank == 0 ? checkpoint_resolve(path, file, n, err, errlen) : 0;
    mpiCheck(MPI_Bcast(&rc, 1, MPI_INT, 0, w->comm));
    mpiCheck(MPI_Bcast(rc ? err : file, (int)(rc ? errlen : n), MPI_CHAR, 0, w->comm));
    return rc;
}

/* ---- signals: a flag, acted on together at a step boundary ------------------------------------ */

static volatile sig_atomic_t stop_requested_ = 0;
static void on_signal_(int sig) { stop_requested_ = sig; }

static void signals_install_(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal_;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

static int stop_agreed_(const Comm* w) {
    int flag = stop_requested_ != 0;
    mpiCheck(MPI_Allreduce(MPI_IN_PLACE, &flag, 1, MPI_INT, MPI_MAX, w->comm));
    return flag;
}

/* ---- the run directory --------------------------------------------------------------------- */

static int mkdirs_(const char* path) {
    char* buf = strdupCheck(path);
    for (char* p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                free(buf);
                return -1;
            }
            *p = '/';
        }
    int rc = mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
    free(buf);
    return rc;
}

/* Keys that define the model and its data: a run directory belongs to one setting of them. */
static int identity_key_(const char* name) {
    return !strncmp(name, "model.", 6) || !strncmp(name, "moe.", 4) || !strncmp(name, "engram.", 7) ||
           !strcmp(name, "run.seed") || !strcmp(name, "data.tokenizer");
}

/* Whether the lock holder's line names this Slurm job (a requeued job keeps its id). */
static int same_slurm_job_(const char* holder, const char* job) {
    const char* at = job ? strstr(holder, ", slurm job ") : NULL;
    if (!at) return 0;
    at += strlen(", slurm job ");
    size_t n = strlen(job);
    return !strncmp(at, job, n) && (at[n] == '\n' || at[n] == '\0');
}

/* Rank 0 holds an exclusive lock on <dir>/.lock while it runs: a second run on the same directory
 * would mix its checkpoints and metrics with this one's. flock is released when the process ends,
 * however it ends, so a crashed or preempted run leaves no stale lock; the file names the holder
 * for the refusal. A Slurm job requeued onto another node may start before the node it left has
 * released its lock (an NFS lease): the same job id waits up to 3 minutes. A file system without
 * locks runs unlocked, with a note. The descriptor stays open for the run. */
static int rundir_lock_(const char* dir, char* err, size_t errlen) {
    char path[2200];
    snprintf(path, sizeof path, "%s/.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open (%s); check run.dir", path, strerror(errno));
        return -1;
    }
    const char* job = getenv("SLURM_JOB_ID");
    for (int waited = 0; flock(fd, LOCK_EX | LOCK_NB) != 0; waited += 2) {
        if (errno != EWOULDBLOCK) {
            fprintf(stderr, "engram: note: %s: the file system has no locks (%s); make sure no other run uses this "
                    "directory\n", path, strerror(errno));
            close(fd);
            return 0;
        }
        char holder[512] = "";
        ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        if (same_slurm_job_(holder, job) && waited < 180) {
            if (waited == 0) fprintf(stderr, "engram: %s: waiting for the lock of an earlier try of this job\n", dir);
            sleep(2);
            continue;
        }
        snprintf(err, errlen, "%s is in use by another engram train (%s); wait for it to end or stop it, or use another "
                 "run.name", dir, holder[0] ? holder : "its holder did not say who it is");
        close(fd);
        return -1;
    }
    char host[256] = "?", when[32], line[700];
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    time_t now = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&now));
    int n = snprintf(line, sizeof line, "pid %d on %s since %s%s%s\n", (int)getpid(), host, when,
                     job ? ", slurm job " : "", job ? job : "");
    if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)n, 0) != n)   // the lock holds either way
        fprintf(stderr, "engram: note: %s: cannot write who holds it (%s)\n", path, strerror(errno));
    return 0;
}

/* Rank 0: create the run directory and take its lock, or refuse a directory another run holds or
 * that belongs to another config. Writes config.yaml
 * (a previous one that differs in other keys, e.g. train.steps, is kept as config.previous.yaml). */
static int rundir_prepare_(const Config* c, const char* dir, char* err, size_t errlen) {
    char path[2200], ck[2200];
    snprintf(ck, sizeof ck, "%s/checkpoints", dir);
    if (mkdirs_(ck) != 0) {
        snprintf(err, errlen, "%s: cannot create the run directory (%s); check run.dir", dir, strerror(errno));
        return -1;
    }
    if (rundir_lock_(dir, err, errlen) != 0) return -1;
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    struct stat st;
    if (stat(path, &st) == 0) {
        Config old;
        char e2[1024];
        if (config_load(&old, path, 0, NULL, e2, sizeof e2) != 0) {
            snprintf(err, errlen, "%s: the run directory's config does not load (%s); use another run.name", dir, e2);
            return -1;
        }
        for (int i = 0; i < config_key_count(); i++) {
            const ConfigKey* k = config_key_at(i);
            if (!identity_key_(k->name)) continue;
            char *a = config_value_string(&old, k), *b = config_value_string(c, k);
            int same = strcmp(a, b) == 0;
            if (!same)
                snprintf(err, errlen, "%s belongs to another config: %s is %s there and %s here; use another run.name "
                         "or remove the directory", dir, k->name, a, b);
            free(a), free(b);
            if (!same) {
                config_free(&old);
                return -1;
            }
        }
        char *a = config_to_string(&old), *b = config_to_string(c);
        int changed = strcmp(a, b) != 0;
        free(a), free(b);
        config_free(&old);
        if (!changed) return 0;
        char prev[2300];
        snprintf(prev, sizeof prev, "%s/config.previous.yaml", dir);
        rename(path, prev);
    }
    FILE* f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "%s: cannot write (%s)", path, strerror(errno));
        return -1;
    }
    config_write(c, f);
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- rank-0 output ----------------------------------------------------------------------------- */

typedef struct {
    FILE* metrics;   // metrics.jsonl
    FILE* log;       // train.log
} RunFiles;

static void say_(const Comm* w, RunFiles* rf, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
static void say_(const Comm* w, RunFiles* rf, const char* fmt, ...) {
    if (w->rank != 0) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fputs(line, stdout);
    fflush(stdout);
    if (rf && rf->log) {
        fputs(line, rf->log);
        fflush(rf->log);
    }
}

static void eta_(char* out, size_t n, double s) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)s;
    if (t >= 3600) snprintf(out, n, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
    else snprintf(out, n, "%ldm%02lds", t / 60, t % 60);
}

/* ---- evaluation ------------------------------------------------------------------------------- */

/* Mean cross-entropy over n_batches global batches from the start of d (in order). */
static double evaluate_(Trainer* tr, const Dataset* d, int B, int n_batches, const Comm* w, int32_t* x, int32_t* y) {
    double sum = 0;
    for (int i = 0; i < n_batches; i++) {
        dataset_batch(d, (int64_t)i * B, B, w->size, w->rank, x, y);
        trainer_loss(tr, x, y);
        sum += tr->ce;
    }
    return sum / n_batches;
}

/* The same token shards on every rank, as far as their files and token counts tell. */
static void dataset_agree_(const Comm* w, const char* key, const Dataset* d) {
    char mine[96];
    snprintf(mine, sizeof mine, "%lld tokens in %d files", (long long)d->n_tokens, d->n_files);
    agree_same_(w, key, mine, "give every rank the same token shards");
}

/* ---- set-up shared by train and eval ------------------------------------------------------------ */

typedef struct {
    Tokenizer* tk;
    Compression comp;
    int has_comp;
} Vocab;

/* The tokenizer's compression into the config (V', pad) and the trainer's lookup. */
static void vocab_setup_(const Comm* w, Config* c, Vocab* v) {
    memset(v, 0, sizeof *v);
    if (!c->data.tokenizer[0]) return;   // no tokenizer: ids are taken as compressed ids
    char err[1024];
    v->tk = tokenizer_load(c->data.tokenizer, err, sizeof err);
    agree_(w, !v->tk, "%s: data.tokenizer: %s", c->path, err);
    agree_(w, compress_for_config(&v->comp, c, v->tk, err, sizeof err) != 0, "%s", err);
    char what[1100], mine[32];
    snprintf(what, sizeof what, "data.tokenizer %s", c->data.tokenizer);
    snprintf(mine, sizeof mine, "sha256 %.12s", v->comp.tokenizer_sha256);
    agree_same_(w, what, mine, "give every rank the same tokenizer file");
    v->has_comp = 1;
}

/* The checkpoint must have been trained with the same tokenizer (same file contents), or its
 * compressed ids, and so its Engram rows, mean something else. Rank 0 reads, all agree. */
static void vocab_check_checkpoint_(const Comm* w, const Vocab* v, const char* file) {
    char err[8192] = "";
    int rc = 0;
    if (w->rank == 0) {
        CkptFile* f = ckptfile_open(file, err, sizeof err);
        if (!f) rc = -1;
        else {
            const char* obj = "/tokenizer/compress_lookup";
            int had = ckptfile_exists(f, obj);
            char* sha = had ? ckptfile_attr_str(f, obj, "tokenizer_sha256") : NULL;
            char* path = had ? ckptfile_attr_str(f, obj, "tokenizer") : NULL;
            if (had != v->has_comp)
                rc = -1, snprintf(err, sizeof err, "%s: trained %s a tokenizer, but data.tokenizer is %s; use the same setting",
                                  file, had ? "with" : "without", v->has_comp ? "set" : "empty");
            else if (had && (!sha || strcmp(sha, v->comp.tokenizer_sha256) != 0))
                rc = -1, snprintf(err, sizeof err, "%s: trained with tokenizer %s (sha256 %.12s...), but %s has sha256 %.12s...; "
                                  "use the tokenizer the run started with", file, path ? path : "?", sha ? sha : "?",
                                  v->comp.tokenizer, v->comp.tokenizer_sha256);
            free(sha), free(path);
            ckptfile_close(f);
        }
    }
    agree_(w, rc, "%s", err);
}

static void vocab_free_(Vocab* v) {
    if (v->has_comp) compress_free(&v->comp);
    if (v->tk) tokenizer_free(v->tk);
}

static void usage_train_(FILE* f) {
    fprintf(f,
            "usage: [mpirun -np P] engram train CONFIG [key=value ...]\n\n"
            "Trains CONFIG (any key can be overridden: train.steps=200 engram.layers=[1,3]) in the run\n"
            "directory <run.dir>/<run.name>/: config.yaml, metrics.jsonl, train.log, checkpoints/.\n"
            "A run directory with checkpoints resumes from the newest. Exit status: 0 done, 2 bad input,\n"
            "3 too many non-finite steps in a row, 75 stopped by SIGTERM/SIGUSR1 after a checkpoint.\n");
}

/* Under Slurm every task must be in one MPI world: a launcher without PMIx support starts each task
 * as a singleton, which would train P independent copies into one run directory. */
static void check_slurm_world_(const Comm* w) {
    const char* nt = getenv("SLURM_NTASKS");
    if (!nt || !getenv("SLURM_JOB_ID")) return;
    int want = atoi(nt);
    if (want > 0 && want != w->size)
        fail_(w, "Slurm asked for %d tasks but MPI sees a world of %d: launch with srun --mpi=pmix (or mpirun inside "
              "the allocation) so that all tasks join one job", want, w->size);
}

int cmd_train(int argc, char** argv) {
    for (int i = 1; i < argc; i++)
        if (cli_is_help(argv[i])) { usage_train_(stdout); return 0; }
    Comm w;
    comm_init(&w, &argc, &argv);
    check_slurm_world_(&w);
    if (argc < 2 || strchr(argv[1], '=')) {
        if (w.rank == 0) usage_train_(stderr);
        comm_free(&w);
        return ENGRAM_EXIT_USAGE;
    }
    Config c;
    char err[8192] = "";
    agree_(&w, config_load(&c, argv[1], argc - 2, argv + 2, err, sizeof err) != 0, "%s", err);
    char* text = config_to_string(&c);
    char digest[65], mine[32], what[2100];
    sha256_hex(text, strlen(text), digest);
    free(text);
    snprintf(mine, sizeof mine, "sha256 %.12s", digest);
    snprintf(what, sizeof what, "%s: the config with the command line's keys", c.path);
    agree_same_(&w, what, mine, "give every rank the same config file and key=value arguments");
    if (c.parallel.device == DEVICE_CUDA)   // refused before anything is read where it cannot run (docs/gpu.md)
        agree_(&w, device_probe(DEVICE_CUDA, err, sizeof err) != 0, "%s", err);
    Vocab vocab;
    vocab_setup_(&w, &c, &vocab);
    const int B = c.train.batch_size, T = c.model.seq_len;
    int first, count;
    batch_share_(&w, &c, c.path, &first, &count);

    // data (before the run directory: bad paths leave nothing behind)
    Dataset train, val;
    int has_val = c.data.val[0] != '\0';
    if (!c.data.train[0]) fail_(&w, "%s: data.train: needed to train (got \"\"); set it to the train_*.bin shards of engram tokenize", c.path);
    agree_(&w, dataset_open(&train, c.data.train, c.model.vocab_size, T, (uint64_t)c.run.seed, 1, err, sizeof err) != 0,
           "data.train: %s", err);
    agree_(&w, has_val && dataset_open(&val, c.data.val, c.model.vocab_size, T, 0, 0, err, sizeof err) != 0,
           "data.val: %s", err);
    dataset_agree_(&w, "data.train", &train);
    if (has_val) dataset_agree_(&w, "data.val", &val);

    // run directory (rank 0 decides, everyone agrees)
    char dir[2048], ckdir[2100], path[2200];
    if (snprintf(dir, sizeof dir, "%s/%s", c.run.dir, c.run.name) >= (int)sizeof dir)
        fail_(&w, "%s: run.dir + run.name is longer than %zu characters; use a shorter path", c.path, sizeof dir - 1);
    snprintf(ckdir, sizeof ckdir, "%s/checkpoints", dir);
    int rc = w.rank == 0 ? rundir_prepare_(&c, dir, err, sizeof err) : 0;
    agree_(&w, rc, "%s", err);

    // model on the backend of parallel.device, and the newest checkpoint if there is one
    Backend be;
    agree_(&w, device_open(&be, c.parallel.device, c.train.precision, w.comm, err, sizeof err) != 0, "%s", err);
    Trainer tr;
    trainer_init_on(&tr, &c, count, (uint64_t)c.run.seed, &w, &be);
    if (vocab.has_comp) tr.lookup = vocab.comp.lookup;
    CkptState st = {.seed = (uint64_t)c.run.seed, .world_size = w.size};
    char file[2200];
    if (resolve_agreed_(&w, ckdir, file, sizeof file, err, sizeof err) == 0) {
        vocab_check_checkpoint_(&w, &vocab, file);
        agree_(&w, checkpoint_load(&tr, file, &st, err, sizeof err) != 0, "%s", err);
    }
    RunFiles rf = {0};
    if (w.rank == 0) {
        snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
        rf.metrics = fopen(path, "a");
        snprintf(path, sizeof path, "%s/train.log", dir);
        rf.log = fopen(path, "a");
    }
    say_(&w, &rf, "engram %s: %s, %d rank%s, %zu dense parameters%s, %d Engram layer%s, %lld train sequences\n",
         st.step ? "resumes" : "trains", dir, w.size, w.size > 1 ? "s" : "", tr.model.tt.dense_numel,
         tr.ep > 1 ? " on rank 0 (routed experts sharded over parallel.expert_parallel ranks)" : "", tr.model.hash.n_layers,
         tr.model.hash.n_layers == 1 ? "" : "s", (long long)train.n_seq);
    if (st.step) say_(&w, &rf, "resumed from %s at step %lld\n", file, (long long)st.step);

    // the loop
    signals_install_();
    size_t n = (size_t)count * T + 1;
    int32_t *x = mallocCheck(n * 4), *y = mallocCheck(n * 4), *xn = mallocCheck(n * 4), *yn = mallocCheck(n * 4);
    int exit_status = 0, bad_run = 0;
    int64_t saved_at = -1;
    double t_loop = engram_now(), t_log = t_loop;
    int64_t step0 = st.step;
    const int steps = c.train.steps;
    dataset_batch(&train, st.data_position, B, w.size, w.rank, x, y);
    while (st.step < steps) {
        int64_t s = st.step + 1;   // the step this iteration completes (1-based)
        int eval_due = has_val && c.train.eval_every > 0 && s % c.train.eval_every == 0;
        int has_next = s < steps && !eval_due;   // evaluation needs the exchange to itself
        if (s < steps) dataset_batch(&train, st.data_position + B, B, w.size, w.rank, xn, yn);
        double loss = trainer_step(&tr, x, y, has_next ? xn : NULL);
        st.step = s;
        st.data_position += B;
        st.tokens_seen += (int64_t)B * T;
        bad_run = tr.skipped ? bad_run + 1 : 0;
        st.bad_steps = tr.bad_steps;
        // figures over all ranks: wire bytes summed, seconds at the slowest rank
        double fig[8] = {(double)tr.ex.st.bytes_sent, (double)tr.ex.st.unique, (double)tr.ex.st.lookups,
                         tr.ep > 1 ? (double)tr.xx.st.bytes_sent : 0.0, tr.t_step, tr.t_exchange, tr.t_allreduce, tr.t_experts};
        mpiCheck(MPI_Allreduce(MPI_IN_PLACE, fig, 4, MPI_DOUBLE, MPI_SUM, w.comm));
        mpiCheck(MPI_Allreduce(MPI_IN_PLACE, fig + 4, 4, MPI_DOUBLE, MPI_MAX, w.comm));
        double tok_s = (double)B * T / fig[4];
        if (rf.metrics) {
            fprintf(rf.metrics,
                    "{\"step\":%lld,\"loss\":%.6f,\"ce\":%.6f,\"aux\":%.6f,\"lr\":%.6g,\"grad_norm\":%.6g,\"skipped\":%d,"
                    "\"tokens\":%lld,\"tokens_per_s\":%.1f,\"step_s\":%.4f,\"exchange_s\":%.5f,\"allreduce_s\":%.5f,"
                    "\"lookups\":%.0f,\"unique_keys\":%.0f,\"wire_bytes\":%.0f,\"dropped\":%ld,\"dispatched\":%ld,"
                    "\"expert_wire_bytes\":%.0f,\"experts_s\":%.5f}\n",
                    (long long)s, loss, tr.ce, tr.aux, tr.lr, tr.grad_norm, tr.skipped, (long long)st.tokens_seen, tok_s,
                    fig[4], fig[5], fig[6], fig[2], fig[1], fig[0], tr.dropped, tr.dispatched, fig[3], fig[7]);
            fflush(rf.metrics);
        }
        if (s % c.train.log_every == 0 || s == steps || s == step0 + 1) {
            double now = engram_now(), per = (now - t_loop) / (double)(s - step0);
            char eta[32];
            eta_(eta, sizeof eta, per * (double)(steps - s));
            say_(&w, &rf, "step %lld/%d | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s | ETA %s | exchange %.1f%%%s\n",
                 (long long)s, steps, loss, tr.lr, tr.grad_norm, (double)B * T * (double)(s - step0) / (now - t_loop), eta,
                 100.0 * fig[5] / fig[4], tr.skipped ? " | SKIPPED (non-finite)" : "");
            t_log = now;
        }
        if (bad_run >= c.train.max_bad_steps) {
            say_(&w, &rf, "stopping: %d non-finite steps in a row (train.max_bad_steps); the last good checkpoint is "
                 "kept; lower train.lr or raise train.grad_clip\n", bad_run);
            exit_status = EXIT_BAD_STEPS;
            break;
        }
        if (eval_due) {
            double vl = evaluate_(&tr, &val, B, c.train.eval_batches, &w, xn, yn);
            say_(&w, &rf, "step %lld | val loss %.4f\n", (long long)s, vl);
            if (rf.metrics) fprintf(rf.metrics, "{\"step\":%lld,\"val_loss\":%.6f}\n", (long long)s, vl), fflush(rf.metrics);
            if (s < steps) dataset_batch(&train, st.data_position, B, w.size, w.rank, xn, yn);
        }
        int stop = stop_agreed_(&w);
        if (bad_run == 0 && ((c.checkpoint.every > 0 && s % c.checkpoint.every == 0) || s == steps || stop)) {
            st.world_size = w.size;
            if (checkpoint_save(&tr, &c, vocab.has_comp ? &vocab.comp : NULL, &st, ckdir, err, sizeof err) != 0)
                fail_(&w, "%s", err);   // checkpoint_save returns one status and message on every rank
            saved_at = s;
            say_(&w, &rf, "checkpoint step %lld saved in %s\n", (long long)s, ckdir);
        }
        if (stop) {
            say_(&w, &rf, "stopping on signal %d at step %lld: checkpoint written; rerun the same command to resume\n",
                 (int)stop_requested_, (long long)s);
            exit_status = EXIT_PREEMPTED;
            break;
        }
        int32_t* t = x; x = xn; xn = t;
        t = y; y = yn; yn = t;
    }
    (void)t_log;
    if (exit_status == 0 && has_val && st.step == steps && !(c.train.eval_every > 0 && steps % c.train.eval_every == 0)) {
        double vl = evaluate_(&tr, &val, B, c.train.eval_batches, &w, x, y);
        say_(&w, &rf, "step %d | val loss %.4f\n", steps, vl);
        if (rf.metrics) fprintf(rf.metrics, "{\"step\":%d,\"val_loss\":%.6f}\n", steps, vl);
    }
    if (exit_status == 0) say_(&w, &rf, "done: %d steps, last checkpoint step %lld in %s\n", steps, (long long)saved_at, ckdir);
    if (rf.metrics) fclose(rf.metrics);
    if (rf.log) fclose(rf.log);
    free(x), free(y), free(xn), free(yn);
    trainer_free(&tr);
    be.close(&be);
    dataset_free(&train);
    if (has_val) dataset_free(&val);
    vocab_free_(&vocab);
    config_free(&c);
    comm_free(&w);
    return exit_status;
}

/* ---- engram eval ------------------------------------------------------------------------------ */

static void usage_eval_(FILE* f) {
    fprintf(f,
            "usage: [mpirun -np P] engram eval CHECKPOINT [--data GLOB] [--batches N] [--json]\n\n"
            "Validation loss (mean cross-entropy) of a checkpoint file, or of a run's checkpoints/ directory\n"
            "(its latest), on GLOB (default: the checkpoint config's data.val), N global batches of\n"
            "train.batch_size sequences (default train.eval_batches), at any number of ranks.\n");
}

int cmd_eval(int argc, char** argv) {
    const char *ckpt = NULL, *data = NULL, *v;
    int batches = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) { usage_eval_(stdout); return 0; }
        if ((v = cli_option(argc, argv, &i, "--data"))) data = v;
        else if ((v = cli_option(argc, argv, &i, "--batches"))) {
            char* end;
            batches = (int)strtol(v, &end, 10);
            if (*end || batches < 1) engram_fail("eval: --batches must be a positive integer (got %s)", v);
        } else if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-') engram_fail("eval: unknown option %s; see engram eval --help", argv[i]);
        else ckpt = argv[i];
    }
    if (!ckpt) { usage_eval_(stderr); return ENGRAM_EXIT_USAGE; }
    Comm w;
    comm_init(&w, &argc, &argv);
    char err[8192] = "", file[2200];
    if (resolve_agreed_(&w, ckpt, file, sizeof file, err, sizeof err) != 0) fail_(&w, "%s", err);
    char* text = checkpoint_read_config(file, err, sizeof err);
    agree_(&w, !text, "%s", err);
    Config c;
    char where[2300];
    snprintf(where, sizeof where, "%s:/config", file);
    agree_(&w, config_load_string(&c, text, where, 0, NULL, err, sizeof err) != 0, "%s", err);
    free(text);
    Vocab vocab;
    vocab_setup_(&w, &c, &vocab);
    const char* glob = data ? data : c.data.val;
    if (!glob[0]) fail_(&w, "%s: no validation data: the config has no data.val; give --data GLOB", file);
    const int B = c.train.batch_size, T = c.model.seq_len;
    if (!batches) batches = c.train.eval_batches;
    Dataset val;
    agree_(&w, dataset_open(&val, glob, c.model.vocab_size, T, 0, 0, err, sizeof err) != 0, "%s", err);
    dataset_agree_(&w, glob, &val);
    int first, count;
    batch_share_(&w, &c, file, &first, &count);
    // the experts' sharding is a run setting, not part of the weights (checkpoints hold them whole):
    // evaluate at any P, sharded as the run was where that divides P, else replicated
    if (w.size % c.parallel.expert_parallel != 0) c.parallel.expert_parallel = 1;
    Trainer tr;
    trainer_init(&tr, &c, count, (uint64_t)c.run.seed, &w);
    if (vocab.has_comp) tr.lookup = vocab.comp.lookup;
    CkptState st;
    vocab_check_checkpoint_(&w, &vocab, file);
    agree_(&w, checkpoint_load(&tr, file, &st, err, sizeof err) != 0, "%s", err);
    size_t n = (size_t)count * T + 1;
    int32_t *x = mallocCheck(n * 4), *y = mallocCheck(n * 4);
    double t0 = engram_now();
    double loss = evaluate_(&tr, &val, B, batches, &w, x, y);
    double dt = engram_now() - t0;
    if (w.rank == 0) {
        if (json)
            printf("{\"checkpoint\":\"%s\",\"step\":%lld,\"data\":\"%s\",\"batches\":%d,\"tokens\":%lld,\"val_loss\":%.6f,"
                   "\"ranks\":%d,\"seconds\":%.3f}\n",
                   file, (long long)st.step, glob, batches, (long long)batches * B * T, loss, w.size, dt);
        else
            printf("%s (step %lld): val loss %.4f over %d batches of %d x %d tokens from %s\n", file, (long long)st.step,
                   loss, batches, B, T, glob);
    }
    free(x), free(y);
    trainer_free(&tr);
    dataset_free(&val);
    vocab_free_(&vocab);
    config_free(&c);
    comm_free(&w);
    return 0;
}
