/* poolkit/poolkit.h - the core headers in one include. */
#ifndef POOLKIT_POOLKIT_H
#define POOLKIT_POOLKIT_H

#include <poolkit/version.h>
#include <poolkit/error.h>
#include <poolkit/event.h>
#include <poolkit/pool.h>
#include <poolkit/future.h>
#include <poolkit/executor.h>
#include <poolkit/hist.h>

#endif /* POOLKIT_POOLKIT_H */
