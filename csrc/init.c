/*
 * init.c: PID 1 of Volant initramfs images (fledge's default init mode).
 *
 * Mounts the runtime filesystems, makes sure /dev/console and /dev/null exist, loads the
 * kernel modules /etc/volant/vm.json lists, then execs kestrel through the guest Python
 * runtime's own loader (docs/guest.md). It never exits: a fatal error is printed on the
 * console and the VM powers off (an exiting PID 1 panics the kernel).
 *
 * Built by fledge: cc -std=c99 -D_GNU_SOURCE -static -Os -s -Wall -Wextra -Werror.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "modlist.h"

#define VM_CONFIG "/etc/volant/vm.json"
#define VM_CONFIG_MAX (16 * 1024 * 1024)
#define RUNTIME "/opt/volant/python"
#define LOADER RUNTIME "/lib/ld-linux-x86-64.so.2"
#ifndef MODULE_INIT_COMPRESSED_FILE
#define MODULE_INIT_COMPRESSED_FILE 4
#endif

static void say(const char *fmt, ...)
{
    char line[512];
    va_list args;
    int n;

    memcpy(line, "init: ", 6);
    va_start(args, fmt);
    n = vsnprintf(line + 6, sizeof(line) - 7, fmt, args);
    va_end(args);
    if (n < 0)
        return;
    n = n > (int)sizeof(line) - 8 ? (int)sizeof(line) - 8 : n;
    line[6 + n] = '\n';
    if (write(STDERR_FILENO, line, (size_t)n + 7) < 0)
        return;
}

static void power_off(void)
{
    say("powering off");
    sync();
    reboot(RB_POWER_OFF);
    for (;;)
        pause();
}

static void mkdirs(const char *path, mode_t mode)
{
    char buf[256];
    size_t i, len = strlen(path);

    if (len >= sizeof(buf))
        return;
    memcpy(buf, path, len + 1);
    for (i = 1; i <= len; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char saved = buf[i];
            buf[i] = '\0';
            mkdir(buf, mode);
            buf[i] = saved;
        }
    }
}

static int mount_fs(const char *source, const char *target, const char *type,
                    unsigned long flags, const char *data)
{
    mkdirs(target, 0755);
    if (mount(source, target, type, flags, data) == 0 || errno == EBUSY)
        return 0;
    return -1;
}

static void mount_all(void)
{
    static const struct {
        const char *source, *target, *type, *data;
        unsigned long flags;
    } table[] = {
        {"proc", "/proc", "proc", NULL, MS_NOSUID | MS_NODEV | MS_NOEXEC},
        {"sysfs", "/sys", "sysfs", NULL, MS_NOSUID | MS_NODEV | MS_NOEXEC},
        {"devtmpfs", "/dev", "devtmpfs", "mode=0755", MS_NOSUID},
        {"tmpfs", "/tmp", "tmpfs", "mode=1777", MS_NOSUID | MS_NODEV},
        {"tmpfs", "/run", "tmpfs", "mode=0755", MS_NOSUID | MS_NODEV},
    };
    size_t i;

    for (i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (mount_fs(table[i].source, table[i].target, table[i].type, table[i].flags,
                     table[i].data) == 0)
            continue;
        /* A kernel without devtmpfs still gets a writable /dev for the nodes below. */
        if (errno == ENODEV && strcmp(table[i].type, "devtmpfs") == 0 &&
            mount_fs("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=0755") == 0) {
            say("no devtmpfs in this kernel; /dev is a tmpfs");
            continue;
        }
        say("cannot mount %s on %s: %s", table[i].type, table[i].target, strerror(errno));
        power_off();
    }
}

static void ensure_node(const char *path, mode_t mode, unsigned major, unsigned minor)
{
    struct stat st;
    if (stat(path, &st) == 0)
        return;
    if (mknod(path, S_IFCHR | mode, makedev(major, minor)) != 0 && errno != EEXIST)
        say("cannot create %s: %s", path, strerror(errno));
}

static void open_console(void)
{
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0) {
        say("cannot open /dev/console: %s (keeping the kernel's descriptors)", strerror(errno));
        return;
    }
    dup2(fd, STDIN_FILENO);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    if (fd > STDERR_FILENO)
        close(fd);
}

/* The whole file in a malloc'ed buffer, or NULL (errno set; ENOENT: no file). */
static char *read_file(const char *path, size_t *size)
{
    char *buf = NULL;
    size_t used = 0, cap = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return NULL;
    for (;;) {
        ssize_t n;
        if (used == cap) {
            char *grown;
            if (cap >= VM_CONFIG_MAX) {
                errno = EFBIG;
                goto failed;
            }
            cap = cap ? cap * 2 : 16384;
            grown = realloc(buf, cap);
            if (grown == NULL)
                goto failed;
            buf = grown;
        }
        n = read(fd, buf + used, cap - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto failed;
        if (n == 0)
            break;
        used += (size_t)n;
    }
    close(fd);
    *size = used;
    return buf;

failed:
    free(buf);
    close(fd);
    return NULL;
}

static int has_suffix(const char *text, const char *suffix)
{
    size_t a = strlen(text), b = strlen(suffix);
    return a >= b && strcmp(text + a - b, suffix) == 0;
}

static long uptime_ms(void)
{
    struct timespec now;

    if (clock_gettime(CLOCK_BOOTTIME, &now) != 0)
        return -1;
    return (long)now.tv_sec * 1000L + now.tv_nsec / 1000000L;
}

static void load_modules(void)
{
    long started = uptime_ms();
    struct modlist list;
    const char *error = NULL;
    size_t size = 0, offset = 0, i, loaded = 0;
    char *json = read_file(VM_CONFIG, &size);

    if (json == NULL) {
        if (errno != ENOENT)
            say("cannot read " VM_CONFIG ": %s; loading no modules", strerror(errno));
        return;
    }
    if (modlist_parse(json, size, &list, &error, &offset) != 0) {
        say(VM_CONFIG ": %s at byte %lu; loading no modules", error ? error : "malformed",
            (unsigned long)offset);
        free(json);
        return;
    }
    free(json);
    for (i = 0; i < list.count; i++) {
        const char *path = list.paths[i];
        int flags = has_suffix(path, ".ko.xz") || has_suffix(path, ".ko.gz") ||
                            has_suffix(path, ".ko.zst")
                        ? MODULE_INIT_COMPRESSED_FILE
                        : 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            say("failed to load %s: %s", path, strerror(errno));
            continue;
        }
        if (syscall(SYS_finit_module, fd, "", flags) == 0 || errno == EEXIST)
            loaded++;
        else
            say("failed to load %s: %s", path, strerror(errno));
        close(fd);
    }
    if (list.count > 0)
        say("loaded %lu of %lu modules in %ld ms", (unsigned long)loaded,
            (unsigned long)list.count, uptime_ms() - started);
    modlist_free(&list);
}

int main(void)
{
    static char *const argv[] = {
        "kestrel",       "--library-path", RUNTIME "/lib", RUNTIME "/bin/python3",
        "-s",            "-S",             "-B",           "/opt/volant/kestrel.pyz",
        NULL,
    };
    static char started_env[40];
    char *const envp[] = {
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
        "TERM=linux",
        "PYTHONHOME=" RUNTIME,
        started_env,
        NULL,
    };
    long started;

    umask(022);
    mount_all();
    ensure_node("/dev/console", 0600, 5, 1);
    ensure_node("/dev/null", 0666, 1, 3);
    open_console();
    started = uptime_ms();
    snprintf(started_env, sizeof(started_env), "VOLANT_INIT_STARTED_MS=%ld", started);
    say("started at uptime %ld.%03ld s", started / 1000, started % 1000);
    load_modules();
    if (chdir("/") != 0)
        say("cannot chdir to /: %s", strerror(errno));
    execve(LOADER, argv, envp);
    say("cannot exec kestrel (%s): %s", LOADER, strerror(errno));
    power_off();
    return 1; /* not reached: power_off() never returns */
}
