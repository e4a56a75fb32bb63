#include "client_address.h"

#include <arpa/inet.h>

#include <array>
#include <cstring>

namespace custos::http {

std::string client_address_group(std::string_view address) {
  // A zone ("fe80::1%eth0") names the interface, not the client.
  const std::string text(address.substr(0, address.find('%')));
  in6_addr v6{};
  if (::inet_pton(AF_INET6, text.c_str(), &v6) != 1) return std::string(address);  // IPv4, or not an address
  if (IN6_IS_ADDR_V4MAPPED(&v6)) {
    std::array<char, INET_ADDRSTRLEN> v4{};
    ::inet_ntop(AF_INET, &v6.s6_addr[12], v4.data(), v4.size());
    return v4.data();
  }
  std::memset(&v6.s6_addr[8], 0, 8);  // the interface identifier
  std::array<char, INET6_ADDRSTRLEN> prefix{};
  ::inet_ntop(AF_INET6, &v6, prefix.data(), prefix.size());
  return std::string(prefix.data()) + "/64";
}

}  // namespace custos::http
