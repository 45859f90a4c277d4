/*
 * cmd_sweep.c — `engram sweep plan|run|report`: ρ-allocation sweeps (ARCHITECTURE.md §7,
 * docs/sweeps.md). plan prints the experts and Engram tables each ρ gets under the fixed budget;
 * run trains every point (each its own run directory, same tokens and steps); report tabulates
 * and plots validation loss against ρ.
 */
#include <string.h>

#include "cli.h"
#include "common.h"
#include "sweep.h"

static void usage_(FILE* f) {
    fprintf(f,
            "usage: engram sweep plan SWEEP.yaml [key=value ...] [--json]\n\n"
            "SWEEP.yaml is a run config (the backbone: model, moe.top_k, engram heads and widths, train, data)\n"
            "with sweep.rhos and sweep.total_params. Each rho gets E routed experts and Engram table bases\n"
            "so that P_tot stays at sweep.total_params and P_act stays fixed (docs/sweeps.md).\n");
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

int cmd_sweep(int argc, char** argv) {
    if (argc < 2 || cli_is_help(argv[1])) {
        usage_(argc < 2 ? stderr : stdout);
        return argc < 2 ? ENGRAM_EXIT_USAGE : 0;
    }
    if (!strcmp(argv[1], "plan")) return sweep_plan_cmd_(argc - 1, argv + 1);
    engram_fail("sweep: unknown subcommand '%s'; see engram sweep --help", argv[1]);
}
