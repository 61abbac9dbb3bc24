/* poolkit/version.h - the library's version, in one place.
 *
 * The Makefile reads PK_VERSION_MAJOR/MINOR/PATCH from this file to name
 * the shared library (libpoolkit.so.MAJOR.MINOR.PATCH, soname
 * libpoolkit.so.MAJOR). Any ABI change bumps MAJOR; while at 0.x the
 * release notes say so. */
#ifndef POOLKIT_VERSION_H
#define POOLKIT_VERSION_H

#ifdef __cplusplus
extern "C" {
#endif

#ifndef PK_API
#define PK_API __attribute__((visibility("default")))
#endif

#define PK_VERSION_MAJOR 0
#define PK_VERSION_MINOR 1
#define PK_VERSION_PATCH 0
#define PK_VERSION_STRING "0.1.0"
/* One number that compares in order: 0x00MMmmpp. */
#define PK_VERSION_HEX \
    ((PK_VERSION_MAJOR << 16) | (PK_VERSION_MINOR << 8) | PK_VERSION_PATCH)

/* Returns the version of the library that is linked, as "MAJOR.MINOR.PATCH".
 * Compare with PK_VERSION_STRING to detect a header/library mismatch.
 * Owner: returns a static string. Threads: safe. */
PK_API const char *pk_version(void);

/* Returns the linked library's version as PK_VERSION_HEX would give it.
 * Threads: safe. */
PK_API unsigned pk_version_number(void);

#ifdef __cplusplus
}
#endif
#endif /* POOLKIT_VERSION_H */
