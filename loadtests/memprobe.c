// memprobe: how fast is this machine's memory right now? Prints the median, in ms, of three walks of 2M dependent
// loads through a 32 MiB table on the calling CPU (run.sh pins it to the server's CPU between windows, with the
// servers idle).
//
// Why: on a virtual machine the host's memory traffic changes how fast the guest runs. The same warmed server, h2c
// 16x32, ran 250k-270k req/s while a probe like this one took ~290-305 ms, and 139k-220k while it took 330-365 ms, for
// Sockets and io_uring alike (loadtests/README.md, "Machine speed"). A run records the probe after every window so that
// a slow period shows up in the report instead of passing for a slow transport.
//
// The table is one full-period linear congruential cycle (next = 1103515245 * i + 12345 mod 2^23: a multiplier that is
// 1 mod 4 and an odd increment visit every slot once), so each load depends on the one before and no prefetcher can
// guess the next.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { Slots = 1u << 23, Loads = 2000000, Walks = 3 };

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void)
{
    uint32_t *next = malloc(sizeof(uint32_t) * Slots);
    if (!next)
    {
        perror("memprobe: malloc");
        return 1;
    }
    for (uint32_t i = 0; i < Slots; i++)
    {
        next[i] = (1103515245u * i + 12345u) & (Slots - 1);
    }
    double ms[Walks];
    volatile uint32_t sink = 0;
    uint32_t j = 0;
    for (int w = 0; w < Walks; w++)
    {
        double t0 = now_ms();
        for (int i = 0; i < Loads; i++)
        {
            j = next[j];
        }
        ms[w] = now_ms() - t0;
        sink += j;
    }
    qsort(ms, Walks, sizeof ms[0], by_value);
    printf("%.1f\n", ms[Walks / 2]);
    free(next);
    return (int)(sink & 0);
}
