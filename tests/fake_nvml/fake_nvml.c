/*
 * A fake libnvidia-ml.so.1 for llmdeck's tests: no GPU, no root.
 *
 * It exports nvmlInit_v2, nvmlShutdown and the functions llmdeck's NVML backend calls, with the
 * NVML ABI's struct layouts (nvml.h), and answers from a scenario:
 *
 *   scenario=two|one|eight|na|lost|hang   (default two)
 *   process_pid=<pid>    PID reported as GPU 0's compute process (default 4198546, see below)
 *   process_pid_file=<path>  read that PID from this file at every call instead (when it holds
 *                        one), for a process started after the library was loaded
 *   hang_fn=<symbol>     function that hangs in the hang scenario (default nvmlDeviceGetPowerUsage)
 *   hang_after=<n>       calls of hang_fn that answer before one hangs (default 2)
 *   hang_ms=<ms>         how long the hung call sleeps (default one hour)
 *   xid=<gpu>:<code>     one critical Xid event delivered through the event set (lost: 1:79)
 *
 * The scenario is read at nvmlInit_v2 from "<this library's path>.scenario" (key=value lines) if
 * that file exists, else from FAKE_NVML_SCENARIO, FAKE_NVML_PROCESS_PID, FAKE_NVML_HANG_FN,
 * FAKE_NVML_HANG_AFTER, FAKE_NVML_HANG_MS and FAKE_NVML_XID. A per-path file lets tests in one
 * process load independent copies of the library with different scenarios.
 *
 * Built with -DFAKE_NVML_MINIMAL, the optional readings (energy, fan, throttle reasons,
 * processes, events) and nvmlDeviceGetMemoryInfo_v2 (drivers before 510) are not exported at
 * all, to test missing symbols.
 *
 * Readings of GPU i (scenarios one, two, eight, hang, lost's GPU 0):
 *   name "NVIDIA H100 80GB HBM3", uuid GPU-00000000-fake-4e56-8d4c-00000000000<i>
 *   utilization gpu (37 + 11 i) % 101 %, memory (12 + 5 i) % 101 %
 *   memory total 85520809984, reserved 536870912, used (8 + 4 i) GiB, free = the rest
 *   temperature 45 + 2 i C, slowdown threshold 87 C
 *   power 312345 + 1500 i mW, enforced limit 700000 mW, energy 123456789 + 1000 i mJ
 *   SM clock 1980 - 15 i MHz, memory clock 2619 MHz, fan 30 + i % on odd GPUs (N/A on even)
 *   throttle reasons: GPU 0 SW power cap, GPU 1 SW + HW thermal slowdown, others idle
 *   performance state P0 for GPUs 0-1, P8 for the others
 *   processes: GPU 0 {process_pid, 6 GiB}, GPU 1 {4199455, memory not available}
 * The default PIDs are above Linux's PID_MAX_LIMIT (2^22 on 64-bit): no process on the machine
 * can have them, so whatever a test finds about them in /proc cannot depend on which of the
 * machine's processes happen to exist. Tests that want a PID named pass one of their own.
 * Scenario na: one "Tesla K80" where only name, uuid, memory, temperature and power answer;
 * energy answers FUNCTION_NOT_FOUND and everything else NOT_SUPPORTED.
 * Scenario lost: two GPUs; GPU 1 gives its name, UUID and events, and answers GPU_IS_LOST to
 * every reading; one Xid 79 event for GPU 1 is delivered.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int nvmlReturn_t;
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_TIMEOUT 10
#define NVML_ERROR_FUNCTION_NOT_FOUND 13
#define NVML_ERROR_GPU_IS_LOST 15

#define MAX_GPUS 8
#define GIB 1073741824ULL
#define VALUE_NOT_AVAILABLE 0xFFFFFFFFFFFFFFFFULL
#define EVENT_XID_CRITICAL 8ULL
#define EVENT_PSTATE 4ULL

#define EXPORT __attribute__((visibility("default")))

typedef struct fake_device {
    unsigned index;
} *nvmlDevice_t;

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;

typedef struct fake_event_set {
    unsigned long long registered[MAX_GPUS];
} *nvmlEventSet_t;

enum scenario { SC_ONE, SC_TWO, SC_EIGHT, SC_NA, SC_LOST, SC_HANG };

static struct fake_device devices[MAX_GPUS];
static int initialized;
static enum scenario scenario = SC_TWO;
/* PID_MAX_LIMIT + n: a PID no process can have. */
#define NO_SUCH_PID(n) (4194304u + (n))
static unsigned process_pid = NO_SUCH_PID(4242);
static char process_pid_file[4096];
static char hang_fn[128] = "nvmlDeviceGetPowerUsage";
static long hang_after = 2;
static long hang_ms = 3600L * 1000L;
static int xid_gpu = -1;
static unsigned long long xid_code;
static int xid_delivered;
static struct fake_event_set the_event_set;

/* Calls per function, for tests ("asked once, then never again"). */
#define MAX_COUNTED 64
static const char *counted_names[MAX_COUNTED];
static long counted_calls[MAX_COUNTED];
static long total_calls;

static void count_call(const char *name) {
    __atomic_add_fetch(&total_calls, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < MAX_COUNTED; i++) {
        const char *seen = __atomic_load_n(&counted_names[i], __ATOMIC_ACQUIRE);
        if (seen == NULL) {
            const char *expected = NULL;
            if (__atomic_compare_exchange_n(&counted_names[i], &expected, name, 0,
                                            __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                seen = name;
            } else {
                seen = expected;
            }
        }
        if (strcmp(seen, name) == 0) {
            long n = __atomic_add_fetch(&counted_calls[i], 1, __ATOMIC_RELAXED);
            if (scenario == SC_HANG && strcmp(name, hang_fn) == 0 && n > hang_after) {
                struct timespec ts = {hang_ms / 1000, (hang_ms % 1000) * 1000000L};
                nanosleep(&ts, NULL);
            }
            return;
        }
    }
}

EXPORT long fake_nvml_call_count(const char *name) {
    for (int i = 0; i < MAX_COUNTED; i++) {
        const char *seen = __atomic_load_n(&counted_names[i], __ATOMIC_ACQUIRE);
        if (seen == NULL) {
            return 0;
        }
        if (strcmp(seen, name) == 0) {
            return __atomic_load_n(&counted_calls[i], __ATOMIC_RELAXED);
        }
    }
    return 0;
}

EXPORT long fake_nvml_total_calls(void) { return __atomic_load_n(&total_calls, __ATOMIC_RELAXED); }

static unsigned gpu_count(void) {
    switch (scenario) {
    case SC_ONE:
    case SC_NA:
        return 1;
    case SC_EIGHT:
        return 8;
    default:
        return 2;
    }
}

static void set_option(const char *key, const char *value) {
    if (strcmp(key, "scenario") == 0) {
        if (strcmp(value, "one") == 0) scenario = SC_ONE;
        else if (strcmp(value, "two") == 0) scenario = SC_TWO;
        else if (strcmp(value, "eight") == 0) scenario = SC_EIGHT;
        else if (strcmp(value, "na") == 0) scenario = SC_NA;
        else if (strcmp(value, "lost") == 0) scenario = SC_LOST;
        else if (strcmp(value, "hang") == 0) scenario = SC_HANG;
    } else if (strcmp(key, "process_pid") == 0) {
        process_pid = (unsigned)strtoul(value, NULL, 10);
    } else if (strcmp(key, "process_pid_file") == 0) {
        snprintf(process_pid_file, sizeof process_pid_file, "%s", value);
    } else if (strcmp(key, "hang_fn") == 0) {
        snprintf(hang_fn, sizeof hang_fn, "%s", value);
    } else if (strcmp(key, "hang_after") == 0) {
        hang_after = strtol(value, NULL, 10);
    } else if (strcmp(key, "hang_ms") == 0) {
        hang_ms = strtol(value, NULL, 10);
    } else if (strcmp(key, "xid") == 0) {
        char *rest = NULL;
        xid_gpu = (int)strtol(value, &rest, 10);
        xid_code = (rest && *rest == ':') ? strtoull(rest + 1, NULL, 10) : 0;
    }
}

static int read_scenario_file(void) {
    Dl_info info;
    if (!dladdr((void *)&set_option, &info) || info.dli_fname == NULL) {
        return 0;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s.scenario", info.dli_fname);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        char *eq = strchr(line, '=');
        if (eq) {
            *eq = 0;
            set_option(line, eq + 1);
        }
    }
    fclose(f);
    return 1;
}

static void read_scenario_env(void) {
    static const char *keys[][2] = {
        {"FAKE_NVML_SCENARIO", "scenario"},   {"FAKE_NVML_PROCESS_PID", "process_pid"},
        {"FAKE_NVML_PROCESS_PID_FILE", "process_pid_file"},
        {"FAKE_NVML_HANG_FN", "hang_fn"},     {"FAKE_NVML_HANG_AFTER", "hang_after"},
        {"FAKE_NVML_HANG_MS", "hang_ms"},     {"FAKE_NVML_XID", "xid"},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = getenv(keys[i][0]);
        if (v) set_option(keys[i][1], v);
    }
}

static void load_scenario(void) {
    scenario = SC_TWO;
    process_pid = NO_SUCH_PID(4242);
    process_pid_file[0] = 0;
    snprintf(hang_fn, sizeof hang_fn, "%s", "nvmlDeviceGetPowerUsage");
    hang_after = 2;
    hang_ms = 3600L * 1000L;
    xid_gpu = -1;
    xid_code = 0;
    xid_delivered = 0;
    if (!read_scenario_file()) {
        read_scenario_env();
    }
    if (scenario == SC_LOST && xid_gpu < 0) {
        xid_gpu = 1;
        xid_code = 79;
    }
    for (unsigned i = 0; i < MAX_GPUS; i++) devices[i].index = i;
}

/* Resolves a handle; answers the error a query on it should return (0 = fine). A lost GPU
 * still gives its name, UUID and event registration (the driver knew them before the fall), and
 * answers every reading with GPU_IS_LOST. */
static nvmlReturn_t check(nvmlDevice_t d, const void *out, unsigned *index, int reading) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (d < &devices[0] || d >= &devices[gpu_count()] || out == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    *index = d->index;
    if (reading && scenario == SC_LOST && d->index == 1) return NVML_ERROR_GPU_IS_LOST;
    return NVML_SUCCESS;
}

#define QUERY_KIND(name, dev, out, reading)                                                        \
    unsigned i;                                                                                    \
    count_call(name);                                                                              \
    nvmlReturn_t rc_ = check(dev, out, &i, reading);                                               \
    if (rc_ != NVML_SUCCESS) return rc_;
#define QUERY(name, dev, out) QUERY_KIND(name, dev, out, 1)
#define QUERY_STATIC(name, dev, out) QUERY_KIND(name, dev, out, 0)

static int is_na(void) { return scenario == SC_NA; }

static nvmlReturn_t copy_string(char *dst, unsigned len, const char *src) {
    if (dst == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlInit_v2(void) {
    count_call("nvmlInit_v2");
    load_scenario();
    initialized = 1;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    return nvmlInit_v2();
}

EXPORT nvmlReturn_t nvmlShutdown(void) {
    count_call("nvmlShutdown");
    initialized = 0;
    return NVML_SUCCESS;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    default: return "Unknown Error";
    }
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    count_call("nvmlSystemGetDriverVersion");
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    return copy_string(version, length, "550.54.15-fake");
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    return copy_string(version, length, "12.550.54.15-fake");
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    count_call("nvmlDeviceGetCount_v2");
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (count == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *count = gpu_count();
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    count_call("nvmlDeviceGetHandleByIndex_v2");
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (device == NULL || index >= gpu_count()) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &devices[index];
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    count_call("nvmlDeviceGetIndex");
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (device < &devices[0] || device >= &devices[gpu_count()] || index == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    *index = device->index;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    QUERY_STATIC("nvmlDeviceGetName", device, name);
    (void)i;
    return copy_string(name, length, is_na() ? "Tesla K80" : "NVIDIA H100 80GB HBM3");
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    QUERY_STATIC("nvmlDeviceGetUUID", device, uuid);
    char buf[96];
    snprintf(buf, sizeof buf, "GPU-00000000-fake-4e56-8d4c-%012u", i);
    return copy_string(uuid, length, buf);
}

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device,
                                                  nvmlUtilization_t *utilization) {
    QUERY("nvmlDeviceGetUtilizationRates", device, utilization);
    if (is_na()) return NVML_ERROR_NOT_SUPPORTED;
    utilization->gpu = (37 + 11 * i) % 101;
    utilization->memory = (12 + 5 * i) % 101;
    return NVML_SUCCESS;
}

static unsigned long long mem_total(void) { return is_na() ? 11996954624ULL : 85520809984ULL; }
static unsigned long long mem_reserved(void) { return is_na() ? 0 : 536870912ULL; }
static unsigned long long mem_used(unsigned i) { return (8 + 4ULL * i) * GIB; }

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    QUERY("nvmlDeviceGetMemoryInfo", device, memory);
    memory->total = mem_total();
    memory->used = mem_used(i);
    memory->free = mem_total() - mem_used(i);
    return NVML_SUCCESS;
}

#ifndef FAKE_NVML_MINIMAL
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    QUERY("nvmlDeviceGetMemoryInfo_v2", device, memory);
    /* NVML_STRUCT_VERSION(Memory, 2): the caller must say which layout it passed. */
    if (memory->version != (unsigned)(sizeof(nvmlMemory_v2_t) | (2u << 24))) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    memory->total = mem_total();
    memory->reserved = mem_reserved();
    memory->used = mem_used(i);
    memory->free = mem_total() - mem_reserved() - mem_used(i);
    return NVML_SUCCESS;
}
#endif

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int *temp) {
    QUERY("nvmlDeviceGetTemperature", device, temp);
    if (sensor != 0) return NVML_ERROR_INVALID_ARGUMENT;
    *temp = 45 + 2 * i;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t device, int threshold,
                                                      unsigned int *temp) {
    QUERY("nvmlDeviceGetTemperatureThreshold", device, temp);
    if (is_na()) return NVML_ERROR_NOT_SUPPORTED;
    if (threshold != 1) return NVML_ERROR_NOT_SUPPORTED; /* only SLOWDOWN */
    *temp = 87;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    QUERY("nvmlDeviceGetPowerUsage", device, power);
    *power = 312345 + 1500 * i;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
    QUERY("nvmlDeviceGetEnforcedPowerLimit", device, limit);
    *limit = is_na() ? 149000 : 700000;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, int type, unsigned int *clock) {
    QUERY("nvmlDeviceGetClockInfo", device, clock);
    if (is_na()) return NVML_ERROR_NOT_SUPPORTED;
    switch (type) {
    case 0: /* graphics */
    case 1: /* SM */
        *clock = 1980 - 15 * i;
        return NVML_SUCCESS;
    case 2: /* memory */
        *clock = 2619;
        return NVML_SUCCESS;
    default:
        return NVML_ERROR_NOT_SUPPORTED;
    }
}

EXPORT nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t device, int *pstate) {
    QUERY("nvmlDeviceGetPerformanceState", device, pstate);
    if (is_na()) return NVML_ERROR_NOT_SUPPORTED;
    *pstate = i < 2 ? 0 : 8;
    return NVML_SUCCESS;
}

#ifndef FAKE_NVML_MINIMAL

EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device,
                                                        unsigned long long *energy) {
    QUERY("nvmlDeviceGetTotalEnergyConsumption", device, energy);
    if (is_na()) return NVML_ERROR_FUNCTION_NOT_FOUND;
    *energy = 123456789ULL + 1000ULL * i;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed_v2(nvmlDevice_t device, unsigned int fan,
                                             unsigned int *speed) {
    QUERY("nvmlDeviceGetFanSpeed_v2", device, speed);
    if (is_na() || i % 2 == 0 || fan != 0) return NVML_ERROR_NOT_SUPPORTED;
    *speed = 30 + i;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device,
                                                              unsigned long long *reasons) {
    QUERY("nvmlDeviceGetCurrentClocksThrottleReasons", device, reasons);
    if (is_na()) return NVML_ERROR_NOT_SUPPORTED;
    *reasons = i == 0 ? 0x4ULL : i == 1 ? (0x20ULL | 0x40ULL) : 0x1ULL;
    return NVML_SUCCESS;
}

static unsigned process_count(unsigned i) { return i < 2 ? 1 : 0; }

static unsigned gpu0_pid(void) {
    if (process_pid_file[0] == 0) return process_pid;
    FILE *f = fopen(process_pid_file, "r");
    if (f == NULL) return process_pid;
    unsigned pid = 0;
    int got = fscanf(f, "%u", &pid);
    fclose(f);
    return got == 1 && pid > 0 ? pid : process_pid;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device,
                                                            unsigned int *count,
                                                            nvmlProcessInfo_t *infos) {
    QUERY("nvmlDeviceGetComputeRunningProcesses_v3", device, count);
    if (is_na()) return NVML_ERROR_NOT_SUPPORTED;
    unsigned n = process_count(i);
    if (infos == NULL || *count < n) {
        *count = n;
        return n == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = n;
    if (n == 0) return NVML_SUCCESS;
    infos[0].pid = i == 0 ? gpu0_pid() : NO_SUCH_PID(5151);
    infos[0].usedGpuMemory = i == 0 ? 6 * GIB : VALUE_NOT_AVAILABLE;
    infos[0].gpuInstanceId = 0xFFFFFFFFu;
    infos[0].computeInstanceId = 0xFFFFFFFFu;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device,
                                                     unsigned long long *types) {
    QUERY_STATIC("nvmlDeviceGetSupportedEventTypes", device, types);
    if (is_na()) return NVML_ERROR_NOT_SUPPORTED;
    *types = EVENT_XID_CRITICAL | EVENT_PSTATE;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    count_call("nvmlEventSetCreate");
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (set == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    memset(&the_event_set, 0, sizeof the_event_set);
    *set = &the_event_set;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long types,
                                             nvmlEventSet_t set) {
    QUERY_STATIC("nvmlDeviceRegisterEvents", device, set);
    if (is_na()) return NVML_ERROR_NOT_SUPPORTED;
    set->registered[i] |= types;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data,
                                        unsigned int timeoutms) {
    count_call("nvmlEventSetWait_v2");
    (void)timeoutms; /* never blocks: the sampler polls with 0 */
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (set == NULL || data == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (xid_gpu >= 0 && (unsigned)xid_gpu < gpu_count() && !xid_delivered &&
        (set->registered[xid_gpu] & EVENT_XID_CRITICAL)) {
        xid_delivered = 1;
        data->device = &devices[xid_gpu];
        data->eventType = EVENT_XID_CRITICAL;
        data->eventData = xid_code;
        data->gpuInstanceId = 0xFFFFFFFFu;
        data->computeInstanceId = 0xFFFFFFFFu;
        return NVML_SUCCESS;
    }
    return NVML_ERROR_TIMEOUT;
}

EXPORT nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    count_call("nvmlEventSetFree");
    (void)set;
    return NVML_SUCCESS;
}

#endif /* FAKE_NVML_MINIMAL */
