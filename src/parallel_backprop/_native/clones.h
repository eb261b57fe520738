/* CLONES: compile a loop once per vector width and pick the widest this CPU has
 * when the module loads (AVX-512, AVX2, or the portable build), where the
 * compiler can (GCC or Clang on x86-64 Linux); elsewhere, one portable build. */
#ifndef PARALLEL_BACKPROP_CLONES_H
#define PARALLEL_BACKPROP_CLONES_H

#if defined(__has_attribute) && defined(__x86_64__) && defined(__linux__)
#if __has_attribute(target_clones)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef CLONES
#define CLONES
#endif

#endif
