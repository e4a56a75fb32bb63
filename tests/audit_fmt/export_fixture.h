// Builds well-formed exports in memory, signed with a fresh key, for the
// verifier's tests and benchmark.
#pragma once

#include <sodium.h>

#include <sstream>
#include <string>
#include <vector>

#include "custos_audit/checkpoint.h"
#include "custos_audit/entry.h"
#include "custos_audit/export.h"
#include "custos_audit/merkle.h"

namespace custos::auditfmt::testing {

struct Fixture {
  std::array<std::uint8_t, 64> secret{};
  PublicKey pub{};
  std::string vkey;
  std::vector<std::vector<std::uint8_t>> entries;
  std::vector<std::string> checkpoints;

  Fixture() {
    if (sodium_init() < 0) throw std::runtime_error("sodium");
    crypto_sign_keypair(pub.data(), secret.data());
    vkey = format_vkey("test.log", pub);
  }

  Entry make_entry(std::uint64_t seq, const Hash& prev) {
    Entry e;
    e.seq = seq;
    e.time = "2026-11-23T08:00:00.000000Z";
    e.principal = "crm-marketing";
    e.role = "marketing";
    e.token_id = "0123456789abcdef";
    e.purpose = "email_marketing";
    e.operation = "subject.read";
    e.subject_id = "00112233445566778899aabbccddeeff";
    e.fields = {"email", "given_name"};
    e.masked_fields = {"email"};
    e.outcome = "allowed";
    e.request_id = "req-" + std::to_string(seq);
    e.node_id = "node-1";
    e.prev = prev;
    return e;
  }

  // n entries; a checkpoint every `every` entries and at the end.
  void build(std::uint64_t n, std::uint64_t every) {
    Frontier f;
    Hash prev{};
    for (std::uint64_t i = 0; i < n; ++i) {
      entries.push_back(encode(make_entry(i, prev)));
      prev = leaf_hash(entries.back());
      f.append(prev);
      if (f.size() % every == 0 || i + 1 == n)
        checkpoints.push_back(sign_checkpoint("test.log/audit", f.size(), f.root(), "test.log", secret));
    }
  }

  std::string write() const {
    std::ostringstream out;
    ExportHeader h{"test.log/audit", "test.log", fingerprint(pub), 0, entries.size(), checkpoints.size(),
                   "2026-11-23T08:00:00Z"};
    ExportWriter w(out, h);
    for (const auto& c : checkpoints) w.add_checkpoint(c);
    for (const auto& e : entries) w.add_entry(e);
    w.finish();
    return out.str();
  }
};

}  // namespace custos::auditfmt::testing
