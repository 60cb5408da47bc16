/*
 * felt's CNI plugin executable (dist/cni/<type>): a forwarder holding no logic. It sends the call to feltd's
 * CNI socket and relays the answer; feltd runs it through the same dispatch as the plugin itself
 * (apps/feltd/cni-server.ts has the frame format, apps/feltd/cni-service.ts what a call means).
 *
 *  - The socket is FELT_CNI_SOCKET, default /run/felt/cni.sock (empty: never use a daemon).
 *  - No daemon (no socket, connect refused, anything failing before the request is sent): exec the plugin's
 *    node bundle (<own directory>/.felt/<type>) with stdin untouched: the call runs in-process as standalone.
 *  - Sent, then the daemon closes without a whole answer or does not answer within FELT_CNI_TIMEOUT seconds
 *    (default 60): exec the bundle with the stdin that was sent and FELT_CNI_DAEMON_LOST=1; the TypeScript
 *    decides what that means (apps/cni/dispatch.ts lostCall: ADD answers code 11, the rest run in-process).
 *
 * Sent: its pid and the st_dev/st_ino of /proc/self/ns/net (feltd acts in this namespace, found as
 * /proc/<pid>/ns/net while this process waits), every CNI_* variable (CNI_PATH included), stdin.
 * Built by scripts/build.mjs with the system compiler, once per type: cc -DFELT_TYPE='"bridge"'.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef FELT_TYPE
#error "build with -DFELT_TYPE='\"<type>\"'"
#endif

/* felt's mark: apps/cni/dispatch.ts isFeltPlugin finds it in this file (in-process delegation, install-cni). */
__attribute__((used)) static const char MARK[] = "\0felt-cni-forwarder type=" FELT_TYPE ";";

#define DEFAULT_SOCKET "/run/felt/cni.sock"
#define DEFAULT_TIMEOUT_S 60.0
#define MAX_STDIN (4u << 20) /* apps/feltd/cni-server.ts MAX_BODY: a bigger call runs in-process */
#define MAX_REPLY (64u << 20)
#define MAX_ENV 128

extern char **environ;
static char self[PATH_MAX];

static void put32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void put64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static uint32_t get32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

/* Run the call in-process: exec the node bundle. With `in`, stdin is replaced by those bytes (already read). */
static void fallback(const unsigned char *in, size_t n, int lost) {
  char bundle[PATH_MAX + 64];
  char *slash = strrchr(self, '/');
  int dirlen = slash ? (int)(slash - self) : 1;
  snprintf(bundle, sizeof bundle, "%.*s/.felt/%s", dirlen, slash ? self : ".", FELT_TYPE);
  if (in) {
    int fd = memfd_create("felt-cni-stdin", 0);
    size_t off = 0;
    while (fd >= 0 && off < n) {
      ssize_t w = write(fd, in + off, n - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;
      off += (size_t)w;
    }
    if (fd < 0 || off < n || lseek(fd, 0, SEEK_SET) < 0 || dup2(fd, 0) < 0) {
      printf("{\"code\":110,\"msg\":\"felt %s: cannot hand the call to %s: %s\"}\n", FELT_TYPE, bundle, strerror(errno));
      exit(1);
    }
    if (fd != 0) close(fd);
  }
  if (lost) setenv("FELT_CNI_DAEMON_LOST", "1", 1);
  char *argv[] = {bundle, self, NULL};
  execv(bundle, argv);
  printf("{\"code\":110,\"msg\":\"felt %s: no daemon, and cannot run %s: %s\"}\n", FELT_TYPE, bundle, strerror(errno));
  exit(1);
}

static int send_all(int fd, const unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Read exactly n bytes before `deadline`; -1 on EOF, error or timeout. */
static int recv_all(int fd, unsigned char *p, size_t n, double deadline) {
  while (n > 0) {
    double left = deadline - now_s();
    if (left <= 0) return -1;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int r = poll(&pfd, 1, left > 1e6 ? 1000000000 : (int)(left * 1000) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    ssize_t got = read(fd, p, n);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return -1;
    p += got;
    n -= (size_t)got;
  }
  return 0;
}

static void write_out(int fd, const unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= (size_t)w;
  }
}

int main(void) {
  ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
  if (sl <= 0) strcpy(self, "./" FELT_TYPE);
  else self[sl] = 0;

  const char *path = getenv("FELT_CNI_SOCKET");
  if (!path) path = DEFAULT_SOCKET;
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (path[0] == 0 || strlen(path) >= sizeof addr.sun_path) fallback(NULL, 0, 0);
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) fallback(NULL, 0, 0);

  /* Connected: read stdin (the daemon gets it), then the frame. */
  size_t cap = 65536, n = 0;
  unsigned char *in = malloc(cap);
  for (;;) {
    if (!in) fallback(NULL, 0, 0);
    if (n == cap) in = realloc(in, cap *= 2);
    if (!in) fallback(NULL, 0, 0);
    ssize_t r = read(0, in + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += (size_t)r;
  }
  if (n > MAX_STDIN) (close(fd), fallback(in, n, 0));
  struct stat ns;
  if (stat("/proc/self/ns/net", &ns) < 0) (close(fd), fallback(in, n, 0));

  const size_t typelen = strlen(FELT_TYPE);
  size_t len = 20 + 4 + typelen + 4 + 4 + n;
  uint32_t nenv = 0;
  for (char **e = environ; *e && nenv < MAX_ENV; e++)
    if (strncmp(*e, "CNI_", 4) == 0) len += 4 + strlen(*e), nenv++;
  unsigned char *f = malloc(12 + len), *p = f;
  if (!f) (close(fd), fallback(in, n, 0));
  memcpy(p, "FELTCNI1", 8), p += 8;
  put32(p, (uint32_t)len), p += 4;
  put32(p, (uint32_t)getpid()), p += 4;
  put64(p, (uint64_t)ns.st_dev), p += 8;
  put64(p, (uint64_t)ns.st_ino), p += 8;
  put32(p, (uint32_t)typelen), p += 4;
  memcpy(p, FELT_TYPE, typelen), p += typelen;
  put32(p, nenv), p += 4;
  uint32_t k = 0;
  for (char **e = environ; *e && k < nenv; e++) {
    if (strncmp(*e, "CNI_", 4) != 0) continue;
    size_t l = strlen(*e);
    put32(p, (uint32_t)l), p += 4;
    memcpy(p, *e, l), p += l;
    k++;
  }
  put32(p, (uint32_t)n), p += 4;
  memcpy(p, in, n), p += n;
  /* Nothing was sent: the daemon has not seen the call, it runs here as if there were no daemon. */
  if (send_all(fd, f, (size_t)(p - f)) < 0) (close(fd), fallback(in, n, 0));
  free(f);
  shutdown(fd, SHUT_WR);

  const char *t = getenv("FELT_CNI_TIMEOUT");
  double timeout = t && *t ? strtod(t, NULL) : DEFAULT_TIMEOUT_S;
  if (!(timeout > 0)) timeout = DEFAULT_TIMEOUT_S;
  double deadline = now_s() + timeout;
  unsigned char head[12];
  if (recv_all(fd, head, 12, deadline) < 0 || memcmp(head, "FELTCNI1", 8) != 0) fallback(in, n, 1);
  uint32_t blen = get32(head + 8);
  if (blen < 12 || blen > MAX_REPLY) fallback(in, n, 1);
  unsigned char *b = malloc(blen);
  if (!b || recv_all(fd, b, blen, deadline) < 0) fallback(in, n, 1);
  uint32_t code = get32(b), olen = get32(b + 4);
  if (olen > blen - 12) fallback(in, n, 1);
  uint32_t elen = get32(b + 8 + olen);
  if (elen > blen - 12 - olen) fallback(in, n, 1);
  write_out(1, b + 8, olen);
  write_out(2, b + 12 + olen, elen);
  return (int)(code & 0xff);
}
