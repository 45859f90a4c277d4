/*
 * cmd_sweep.c — `engram sweep plan|run|report`: ρ-allocation sweeps (ARCHITECTURE.md §7,
 * docs/sweeps.md). plan prints the experts and Engram tables each ρ gets under the fixed budget;
 * run trains every point (each its own run directory, same tokens and steps); report tabulates
 * and plots validation loss against ρ.
 */
#include <dirent.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "common.h"
#include "sweep.h"

static void usage_(FILE* f) {
    fprintf(f,
            "usage: engram sweep plan SWEEP.yaml [key=value ...] [--json]\n"
            "       engram sweep run SWEEP.yaml [key=value ...] [--ranks P] [--slurm [--sbatch \"ARGS\"]]\n"
            "       engram sweep report DIR [--json]\n\n"
            "SWEEP.yaml is a run config (the backbone: model, moe.top_k, engram heads and widths, train, data)\n"
            "with sweep.rhos and sweep.total_params. Each rho gets E routed experts and Engram table bases\n"
            "so that P_tot stays at sweep.total_params and P_act stays fixed (docs/sweeps.md).\n"
            "run trains every point in <run.dir>/<run.name>/<point>/ with the same data and steps (mpirun\n"
            "with --ranks P, default 2; or --slurm: one job-array task per point with jobs/sweep_array.sbatch);\n"
            "finished points are skipped and interrupted ones resume. report writes DIR/sweep.csv,\n"
            "DIR/sweep.json and DIR/sweep.png (validation loss against rho, minimum marked).\n");
}

static void print_plan_(const SweepPoint* p, int n, const Config* c, int json) {
    if (json) {
        printf("{\"total_params\":%lld,\"points\":[", (long long)c->sweep.total_params);
        for (int i = 0; i < n; i++)
            printf("%s{\"name\":\"%s\",\"rho_target\":%.6g,\"rho_actual\":%.6f,\"experts\":%d,\"engram_base\":%lld,"
                   "\"engram_rows\":%lld,\"P_tot\":%lld,\"P_act\":%lld,\"P_sparse\":%lld,\"dev_P_tot\":%.6f,"
                   "\"dev_P_act\":%.6f,\"dev_rho\":%.6f}",
                   i ? "," : "", p[i].name, p[i].rho_target, p[i].acc.rho_actual, p[i].experts, (long long)p[i].base,
                   (long long)p[i].acc.engram_rows, (long long)p[i].acc.P_tot, (long long)p[i].acc.P_act,
                   (long long)p[i].acc.P_sparse, p[i].dev_P_tot, p[i].dev_P_act, p[i].acc.rho_actual - p[i].rho_target);
        printf("]}\n");
        return;
    }
    printf("budget P_tot = %lld; deviations: P_tot vs the budget, P_act vs the mean over rho < 1\n",
           (long long)c->sweep.total_params);
    printf("%-10s %8s %8s %8s %12s %13s %13s %13s %9s %9s\n", "point", "rho", "actual", "experts", "engram_rows",
           "P_tot", "P_act", "P_sparse", "dP_tot", "dP_act");
    for (int i = 0; i < n; i++)
        printf("%-10s %8.3f %8.4f %8d %12lld %13lld %13lld %13lld %+8.3f%% %+8.3f%%\n", p[i].name, p[i].rho_target,
               p[i].acc.rho_actual, p[i].experts, (long long)p[i].acc.engram_rows, (long long)p[i].acc.P_tot,
               (long long)p[i].acc.P_act, (long long)p[i].acc.P_sparse, 100 * p[i].dev_P_tot, 100 * p[i].dev_P_act);
}

static int sweep_plan_cmd_(int argc, char** argv) {
    const char* path = NULL;
    int json = 0, n_over = 0;
    char** over = callocCheck(argc, sizeof(char*));
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-') engram_fail("sweep plan: unknown option %s; see engram sweep --help", argv[i]);
        else if (strchr(argv[i], '=')) over[n_over++] = argv[i];
        else path = argv[i];
    }
    if (!path) engram_fail("sweep plan: give the sweep config: engram sweep plan SWEEP.yaml");
    Config c;
    cli_load_config(&c, path, n_over, over);
    free(over);
    if (c.sweep.total_params <= 0)
        engram_fail("%s: sweep.total_params: the budget is needed (got %lld); e.g. sweep.total_params=20000000", path,
                    (long long)c.sweep.total_params);
    SweepPoint* pts;
    char err[2048];
    int n = sweep_plan(&c, &pts, err, sizeof err);
    if (n < 0) engram_fail("%s", err);
    print_plan_(pts, n, &c, json);
    free(pts);
    config_free(&c);
    return 0;
}

/* ---- run ------------------------------------------------------------------------------------ */

/* Has the point's run finished? Its checkpoints/latest names step_<steps>.h5. */
static int point_done_(const char* dir, int steps) {
    char path[4200], line[512];
    snprintf(path, sizeof path, "%s/checkpoints/latest", dir);
    FILE* f = fopen(path, "r");
    if (!f) return 0;
    int done = 0;
    if (fgets(line, sizeof line, f)) {
        char want[64];
        snprintf(want, sizeof want, "step_%08d.h5", steps);
        done = strstr(line, want) != NULL;
    }
    fclose(f);
    return done;
}

/* mpirun -np P <this engram> train SWEEP.yaml <user overrides> <point overrides> run.name=...;
 * threads per rank as jobs/launch.sh sets them. Returns the exit status. */
static int train_point_(const char* sweep_path, char** user, int n_user, const SweepPoint* p, const char* run_name,
                        int ranks) {
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) engram_die("run engram from a path /proc/self/exe resolves", "cannot find the engram binary");
    self[n] = '\0';
    char* del = strstr(self, " (deleted)");   // rebuilt while the sweep runs: take the new binary
    if (del && del[10] == '\0') *del = '\0';
    char np[16], name_kv[1100];
    snprintf(np, sizeof np, "%d", ranks);
    snprintf(name_kv, sizeof name_kv, "run.name=%s", run_name);
    char** argv = callocCheck((size_t)(n_user + p->n_overrides + 16), sizeof(char*));
    int a = 0;
    argv[a++] = "mpirun", argv[a++] = "-np", argv[a++] = np, argv[a++] = "-x", argv[a++] = "OMP_NUM_THREADS";
    argv[a++] = "-x", argv[a++] = "OPENBLAS_NUM_THREADS", argv[a++] = "-x", argv[a++] = "OMP_WAIT_POLICY";
    argv[a++] = self, argv[a++] = "train";
    argv[a++] = (char*)sweep_path;
    for (int i = 0; i < n_user; i++) argv[a++] = user[i];
    for (int i = 0; i < p->n_overrides; i++) argv[a++] = (char*)p->overrides[i];
    argv[a++] = name_kv;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN), t = cores / ranks > 0 ? cores / ranks : 1;
        char th[24];
        snprintf(th, sizeof th, "%ld", t);
        setenv("OMP_NUM_THREADS", th, 0), setenv("OPENBLAS_NUM_THREADS", th, 0);
        setenv("OMP_WAIT_POLICY", "passive", 0);   // as jobs/launch.sh
        setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0), setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
        if (geteuid() == 0) setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0), setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
        execvp("mpirun", argv);
        fprintf(stderr, "engram: sweep run: cannot start mpirun (install openmpi-bin: bash jobs/setup.sh)\n");
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    free(argv);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* --slurm: DIR/config.yaml (the resolved sweep config) and DIR/points.txt ("NAME key=value ..." per
 * line), then one job-array task per point with jobs/sweep_array.sbatch DIR (docs/cluster.md). */
/* jobs/<name> of the checkout this binary was built in (<root>/build/engram), or of $ENGRAM_ROOT. */
static void job_script_(const char* name, char* out, size_t n) {
    const char* root = getenv("ENGRAM_ROOT");
    if (root) {
        snprintf(out, n, "%s/jobs/%s", root, name);
        return;
    }
    char self[2048];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    self[k > 0 ? k : 0] = '\0';
    char* slash = strrchr(self, '/');
    if (slash) *slash = '\0';   // <root>/build
    snprintf(out, n, "%s/../jobs/%s", self, name);
}

static int submit_slurm_(const Config* c, const SweepPoint* p, int n, const char* dir, const char* sbatch_args) {
    char path[2300];
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    FILE* f = fopen(path, "w");
    if (!f) engram_fail("sweep run: cannot write %s", path);
    config_write(c, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/points.txt", dir);
    if (!(f = fopen(path, "w"))) engram_fail("sweep run: cannot write %s", path);
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s", p[i].name);
        for (int o = 0; o < p[i].n_overrides; o++) fprintf(f, " %s", p[i].overrides[o]);
        fprintf(f, "\n");
    }
    fclose(f);
    char cmd[8192], script[2300];
    job_script_("sweep_array.sbatch", script, sizeof script);
    if (access(script, R_OK) != 0) engram_fail("sweep run --slurm: %s not found; set ENGRAM_ROOT to the engram checkout", script);
    snprintf(cmd, sizeof cmd, "sbatch --array=0-%d %s '%s' '%s' 'run.dir=%s'", n - 1, sbatch_args ? sbatch_args : "", script, dir,
             dir);
    printf("sweep %s: %s\n", c->run.name, cmd);
    fflush(stdout);
    int rc = system(cmd);
    if (rc != 0) engram_fail("sweep run --slurm: sbatch failed (exit %d); run from the repository root with Slurm available", rc);
    return 0;
}

static int sweep_run_cmd_(int argc, char** argv) {
    const char *path = NULL, *v;
    int ranks = 2, slurm = 0, n_user = 0;
    const char* sbatch_args = NULL;
    char** user = callocCheck(argc, sizeof(char*));
    for (int i = 1; i < argc; i++) {
        if ((v = cli_option(argc, argv, &i, "--ranks"))) {
            ranks = atoi(v);
            if (ranks < 1) engram_fail("sweep run: --ranks must be a positive integer (got %s)", v);
        } else if (!strcmp(argv[i], "--slurm")) slurm = 1;
        else if ((v = cli_option(argc, argv, &i, "--sbatch"))) sbatch_args = v;
        else if (argv[i][0] == '-') engram_fail("sweep run: unknown option %s; see engram sweep --help", argv[i]);
        else if (strchr(argv[i], '=')) user[n_user++] = argv[i];
        else path = argv[i];
    }
    if (!path) engram_fail("sweep run: give the sweep config: engram sweep run SWEEP.yaml");
    Config c;
    cli_load_config(&c, path, n_user, user);
    if (c.sweep.total_params <= 0) engram_fail("%s: sweep.total_params: the budget is needed (got 0)", path);
    SweepPoint* pts;
    char err[2048], dir[2048];
    int n = sweep_plan(&c, &pts, err, sizeof err);
    if (n < 0) engram_fail("%s", err);
    snprintf(dir, sizeof dir, "%s/%s", c.run.dir, c.run.name);
    mkdir(c.run.dir, 0755), mkdir(dir, 0755);
    int failed = 0, status = -1;   // status: set when the sweep ends early (submitted, or signalled)
    if (slurm) status = submit_slurm_(&c, pts, n, dir, sbatch_args);
    double t0 = engram_now();
    for (int i = 0; i < n && status < 0; i++) {
        char run_name[1024], pdir[3100];
        snprintf(run_name, sizeof run_name, "%s/%s", c.run.name, pts[i].name);
        snprintf(pdir, sizeof pdir, "%s/%s", c.run.dir, run_name);
        if (point_done_(pdir, c.train.steps)) {
            printf("sweep %s: point %d/%d %s done already (%s)\n", c.run.name, i + 1, n, pts[i].name, pdir);
            continue;
        }
        printf("sweep %s: point %d/%d %s: %d experts, %lld Engram rows, P_tot %lld (%.0f s so far)\n", c.run.name, i + 1, n,
               pts[i].name, pts[i].experts, (long long)pts[i].acc.engram_rows, (long long)pts[i].acc.P_tot,
               engram_now() - t0);
        int rc = train_point_(path, user, n_user, &pts[i], run_name, ranks);
        if (rc == 75) {
            printf("sweep %s: stopped by a signal during %s; rerun the same command to resume\n", c.run.name, pts[i].name);
            status = 75;
            break;
        }
        if (rc != 0) {
            printf("sweep %s: point %s failed (exit %d); see %s/train.log\n", c.run.name, pts[i].name, rc, pdir);
            failed++;
        }
    }
    if (status < 0) {
        printf("sweep %s: %d of %d points trained in %s (%.0f s); engram sweep report %s\n", c.run.name, n - failed, n,
               dir, engram_now() - t0, dir);
        status = failed ? 1 : 0;
    }
    free(pts), free(user);
    config_free(&c);
    return status;
}

/* ---- report ------------------------------------------------------------------------------------ */

typedef struct {
    char name[256];
    double rho_target, rho_actual, val_loss, tokens_per_s;
    int experts, step;
    int64_t engram_rows, P_tot, P_act;
} SweepResult;

/* Last val_loss and step, and mean tokens/s, from a run's metrics.jsonl. */
static int read_metrics_(const char* path, SweepResult* r) {
    FILE* f = fopen(path, "r");
    if (!f) return -1;
    char line[4096];
    double tps = 0;
    int n = 0;
    r->val_loss = NAN;
    while (fgets(line, sizeof line, f)) {
        const char* v = strstr(line, "\"val_loss\":");
        if (v) r->val_loss = atof(v + 11);
        const char* t = strstr(line, "\"tokens_per_s\":");
        if (t) tps += atof(t + 15), n++;
        const char* s = strstr(line, "\"step\":");
        if (s && atoi(s + 7) > r->step) r->step = atoi(s + 7);
    }
    fclose(f);
    r->tokens_per_s = n ? tps / n : 0;
    return 0;
}

static int cmp_rho_(const void* a, const void* b) {
    double x = ((const SweepResult*)a)->rho_target, y = ((const SweepResult*)b)->rho_target;
    return (x > y) - (x < y);
}

/* gnuplot: validation loss against rho, a quadratic fit (3 points or more), the lowest point marked. */
static void plot_(const char* dir, const SweepResult* r, int n) {
    char data[2100], script[2100], png[2100], cmd[6400];
    snprintf(data, sizeof data, "%s/sweep.dat", dir);
    snprintf(script, sizeof script, "%s/sweep.gp", dir);
    snprintf(png, sizeof png, "%s/sweep.png", dir);
    FILE* f = fopen(data, "w");
    if (!f) return;
    int best = -1, pts = 0;
    for (int i = 0; i < n; i++) {
        if (isnan(r[i].val_loss)) continue;
        fprintf(f, "%g %.6f\n", r[i].rho_target, r[i].val_loss);
        pts++;
        if (best < 0 || r[i].val_loss < r[best].val_loss) best = i;
    }
    fclose(f);
    if (best < 0 || !(f = fopen(script, "w"))) return;
    const SweepResult* m = &r[best];
    const int fit = pts >= 3;   // the paper's curve is U-shaped: a quadratic shows where it bottoms out
    fprintf(f, "set terminal pngcairo size 800,500\nset output '%s'\n", png);
    fprintf(f, "set xlabel 'rho (share of the sparse budget held by routed experts)'\nset ylabel 'validation loss'\n");
    fprintf(f, "set grid\nset key top center\nset xrange [-0.05:1.05]\n");
    if (fit) fprintf(f, "a = 1; b = -1; c = %g\nset fit quiet\nset fit logfile '/dev/null'\nfit a*x**2 + b*x + c '%s' via a, b, c\n",
                     m->val_loss, data);
    fprintf(f, "set label 1 'lowest: rho %g, loss %.4f' at %g, %.6f offset 1,1\n", m->rho_target, m->val_loss,
            m->rho_target, m->val_loss);
    fprintf(f, "plot '%s' with linespoints pt 7 title 'validation loss', %s'-' with points pt 6 ps 3 title 'minimum'\n",
            data, fit ? "a*x**2 + b*x + c title 'quadratic fit', " : "");
    fprintf(f, "%g %.6f\ne\n", m->rho_target, m->val_loss);
    fclose(f);
    snprintf(cmd, sizeof cmd, "gnuplot '%s' 2>/dev/null", script);
    if (system(cmd) != 0)
        fprintf(stderr, "engram: sweep report: gnuplot failed on %s (is gnuplot-nox installed? bash jobs/setup.sh)\n", script);
}

static int sweep_report_cmd_(int argc, char** argv) {
    const char* dir = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-') engram_fail("sweep report: unknown option %s", argv[i]);
        else dir = argv[i];
    }
    if (!dir) engram_fail("sweep report: give the sweep directory, e.g. engram sweep report runs/sweep-tiny");
    DIR* d = opendir(dir);
    if (!d) engram_fail("sweep report: %s: cannot open the sweep directory", dir);
    SweepResult* r = NULL;
    int n = 0;
    struct dirent* de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char cfg[2600], met[2600], err[2048];
        snprintf(cfg, sizeof cfg, "%s/%s/config.yaml", dir, de->d_name);
        snprintf(met, sizeof met, "%s/%s/metrics.jsonl", dir, de->d_name);
        Config c;
        if (access(cfg, R_OK) != 0 || config_load(&c, cfg, 0, NULL, err, sizeof err) != 0) continue;
        r = reallocCheck(r, (size_t)(n + 1) * sizeof *r);
        SweepResult* x = &r[n++];
        memset(x, 0, sizeof *x);
        snprintf(x->name, sizeof x->name, "%s", de->d_name);
        Accounting a;
        sweep_account(&c, &a);
        x->rho_target = c.sweep.rhos.n == 1 ? c.sweep.rhos.v[0] : a.rho_actual;
        x->rho_actual = a.rho_actual, x->experts = a.experts, x->engram_rows = a.engram_rows;
        x->P_tot = a.P_tot, x->P_act = a.P_act;
        if (read_metrics_(met, x) != 0) x->val_loss = NAN;
        config_free(&c);
    }
    closedir(d);
    if (n == 0) engram_fail("sweep report: %s holds no point run directories (config.yaml + metrics.jsonl); run engram sweep run first", dir);
    qsort(r, (size_t)n, sizeof *r, cmp_rho_);
    char path[2300];
    snprintf(path, sizeof path, "%s/sweep.csv", dir);
    FILE* csv = fopen(path, "w");
    snprintf(path, sizeof path, "%s/sweep.json", dir);
    FILE* js = fopen(path, "w");
    if (!csv || !js) engram_fail("sweep report: cannot write %s/sweep.csv / sweep.json", dir);
    fprintf(csv, "point,rho_target,rho_actual,experts,engram_rows,P_tot,P_act,steps,val_loss,tokens_per_s\n");
    fprintf(js, "{\"points\":[");
    if (!json)
        printf("%-12s %6s %8s %8s %12s %12s %12s %6s %9s %9s\n", "point", "rho", "actual", "experts", "engram_rows", "P_tot",
               "P_act", "steps", "val_loss", "tok/s");
    for (int i = 0; i < n; i++) {
        fprintf(csv, "%s,%g,%.6f,%d,%lld,%lld,%lld,%d,%.6f,%.1f\n", r[i].name, r[i].rho_target, r[i].rho_actual, r[i].experts,
                (long long)r[i].engram_rows, (long long)r[i].P_tot, (long long)r[i].P_act, r[i].step, r[i].val_loss,
                r[i].tokens_per_s);
        fprintf(js, "%s{\"point\":\"%s\",\"rho_target\":%g,\"rho_actual\":%.6f,\"experts\":%d,\"engram_rows\":%lld,"
                "\"P_tot\":%lld,\"P_act\":%lld,\"steps\":%d,\"val_loss\":%s%.6f%s,\"tokens_per_s\":%.1f}",
                i ? "," : "", r[i].name, r[i].rho_target, r[i].rho_actual, r[i].experts, (long long)r[i].engram_rows,
                (long long)r[i].P_tot, (long long)r[i].P_act, r[i].step, isnan(r[i].val_loss) ? "null" : "",
                isnan(r[i].val_loss) ? 0.0 : r[i].val_loss, isnan(r[i].val_loss) ? "" : "", r[i].tokens_per_s);
        if (!json)
            printf("%-12s %6.3f %8.4f %8d %12lld %12lld %12lld %6d %9.4f %9.0f\n", r[i].name, r[i].rho_target,
                   r[i].rho_actual, r[i].experts, (long long)r[i].engram_rows, (long long)r[i].P_tot,
                   (long long)r[i].P_act, r[i].step, r[i].val_loss, r[i].tokens_per_s);
    }
    fprintf(js, "]}\n");
    fclose(csv);
    fclose(js);
    plot_(dir, r, n);
    if (json) {
        snprintf(path, sizeof path, "%s/sweep.json", dir);
        FILE* f = fopen(path, "r");
        int ch;
        while (f && (ch = fgetc(f)) != EOF) putchar(ch);
        if (f) fclose(f);
    } else {
        printf("wrote %s/sweep.csv, %s/sweep.json, %s/sweep.png\n", dir, dir, dir);
    }
    free(r);
    return 0;
}

int cmd_sweep(int argc, char** argv) {
    if (argc < 2 || cli_is_help(argv[1])) {
        usage_(argc < 2 ? stderr : stdout);
        return argc < 2 ? ENGRAM_EXIT_USAGE : 0;
    }
    if (!strcmp(argv[1], "plan")) return sweep_plan_cmd_(argc - 1, argv + 1);
    if (!strcmp(argv[1], "run")) return sweep_run_cmd_(argc - 1, argv + 1);
    if (!strcmp(argv[1], "report")) return sweep_report_cmd_(argc - 1, argv + 1);
    engram_fail("sweep: unknown subcommand '%s'; see engram sweep --help", argv[1]);
}
