// custos/util/process.h — process hardening for the binaries that hold keys
// and plaintext (custosd, custos).
#pragma once

namespace custos::util {

// No core dumps and no ptrace by unprivileged processes: decrypted values and
// keys in ordinary memory must not end up in a crash dump. Sets RLIMIT_CORE
// to 0 and PR_SET_DUMPABLE to 0. Keys also live in sodium_malloc'd memory,
// which libsodium excludes from dumps on its own. Never fails the caller:
// returns false if a setting could not be applied.
bool harden_process();

}  // namespace custos::util
