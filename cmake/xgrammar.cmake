# xgrammar's C++ core (Apache-2.0, https://github.com/mlc-ai/xgrammar): the grammar engine of
# structured output. ./phi bootstrap unpacks its PyPI sdist (pinned by sha256) into the
# git-ignored third_party/; it is built here as part of our build, as the static target
# `xgrammar`, without its Python bindings.
set(PHI_XGRAMMAR_VERSION 0.2.9)
set(PHI_XGRAMMAR_SOURCE_DIR ${PROJECT_SOURCE_DIR}/third_party/xgrammar-${PHI_XGRAMMAR_VERSION}
    CACHE PATH "xgrammar's unpacked source (./phi bootstrap fetches it)")
if(NOT EXISTS ${PHI_XGRAMMAR_SOURCE_DIR}/CMakeLists.txt)
  message(FATAL_ERROR
    "xgrammar ${PHI_XGRAMMAR_VERSION} source not found in ${PHI_XGRAMMAR_SOURCE_DIR}: "
    "run ./phi bootstrap (it downloads and unpacks the pinned PyPI sdist)")
endif()

# xgrammar's CMakeLists reads ${CMAKE_BINARY_DIR}/config.cmake before the sdist's own
# cmake/config.cmake (which turns the Python bindings on); CMAKE_BINARY_DIR is our top build
# folder here. Its CMakeLists prepends -Werror -flto=auto to CMAKE_CXX_FLAGS in its own
# directory scope: the flags appended here come later and win, so a newer compiler's new
# warning cannot break the build and no LTO bytecode reaches our links.
file(CONFIGURE OUTPUT ${CMAKE_BINARY_DIR}/config.cmake @ONLY CONTENT [=[
# Written by cmake/xgrammar.cmake: options of the xgrammar subproject.
set(XGRAMMAR_BUILD_PYTHON_BINDINGS OFF)
set(XGRAMMAR_BUILD_CXX_TESTS OFF)
set(XGRAMMAR_ENABLE_CPPTRACE OFF)
set(XGRAMMAR_ENABLE_COVERAGE OFF)
set(XGRAMMAR_ENABLE_INTERNAL_CHECK OFF)
set(CMAKE_CXX_FLAGS "${CMAKE_CXX_FLAGS} -fno-lto -Wno-error")
]=])

# SYSTEM: its headers are outside our -Wall -Wextra -Werror; EXCLUDE_FROM_ALL: built only
# when something links it.
add_subdirectory(${PHI_XGRAMMAR_SOURCE_DIR} ${CMAKE_BINARY_DIR}/third_party/xgrammar
                 EXCLUDE_FROM_ALL SYSTEM)
