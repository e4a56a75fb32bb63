// Writes distinctive values through every path that takes personal data,
// then scans every byte of the data directory (database, WAL, shm, keys,
// anything else) for them. None may appear, before or after erasure.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_support.h"

namespace custos {
namespace {

using service::Json;
using testing::files_containing;
using testing::TestVault;

TEST(Canary, NoPlaintextAnywhereInTheDataDirectory) {
  TestVault v;
  const std::vector<std::string> canaries = {
      "Qzanary-Given",        "Qzanary-Family",   "qzanary.person@canary-mail.example", "Qzanary Street 77",
      "QZ-EXTERNAL-424242",   "Qzanary-Occupation", "Qzanary touchpoint note", "Qzanary-Patched-Name",
      "Qzanary-Batch-Member"};
  const std::string id = v.service->create_subject(
      v.admin(), {{"fields",
                   {{"given_name", canaries[0]},
                    {"family_name", canaries[1]},
                    {"email", canaries[2]},
                    {"postal_address", canaries[3]},
                    {"external_id", canaries[4]},
                    {"occupation", canaries[5]},
                    {"phone", "+44 20 7946 0958"}}}})["id"];
  v.service->add_touchpoint(v.admin(), id, {{"channel", "phone"}, {"type", "complaint"}, {"notes", canaries[6]}});
  v.service->patch_subject(v.admin(), id, {{"fields", {{"given_name", canaries[7]}}}});
  v.service->batch_create(v.admin(), {{"subjects", {{{"fields", {{"family_name", canaries[8]}}}}}}});
  // Reads and lookups go through the audit path too.
  v.service->get_subject(v.admin("customer_service"), id);
  v.service->find_subjects(v.admin("customer_service"), "email", canaries[2]);
  v.service->find_subjects(v.admin("customer_service"), "phone", "+442079460958");

  for (const auto& c : canaries) EXPECT_TRUE(files_containing(v.dir.path(), c).empty()) << c;
  EXPECT_TRUE(files_containing(v.dir.path(), "+442079460958").empty());
  EXPECT_TRUE(files_containing(v.dir.path(), "canary-mail").empty());

  v.service->erase_subject(v.admin(), id, "canary test");
  for (const auto& c : canaries) EXPECT_TRUE(files_containing(v.dir.path(), c).empty()) << c;
}

}  // namespace
}  // namespace custos
