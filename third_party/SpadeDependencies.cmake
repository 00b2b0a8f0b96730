# Finds the system packages spade builds against (Debian: libeigen3-dev, nlohmann-json3-dev,
# catch2, libstb-dev, zlib1g-dev). Nothing here is copied third-party code.
find_package(Eigen3 3.4 REQUIRED NO_MODULE)
find_package(nlohmann_json 3 REQUIRED)
find_package(OpenMP REQUIRED)
find_package(Threads REQUIRED)

add_library(spade::eigen INTERFACE IMPORTED)
target_link_libraries(spade::eigen INTERFACE Eigen3::Eigen)
# Eigen's own asserts cost a lot in inner loops; our code checks its inputs itself.
target_compile_definitions(spade::eigen INTERFACE EIGEN_NO_DEBUG)

add_library(spade::json INTERFACE IMPORTED)
target_link_libraries(spade::json INTERFACE nlohmann_json::nlohmann_json)

# libstb-dev ships headers under /usr/include/stb and a compiled libstb. Sanitizer and fuzz
# builds compile stb's implementation from those same headers instead (stb_instrumented.cpp), so
# that AddressSanitizer sees its memory accesses and libFuzzer its branches.
find_path(STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb REQUIRED)
find_library(STB_LIBRARY stb)
add_library(spade::stb INTERFACE IMPORTED)
target_include_directories(spade::stb INTERFACE ${STB_INCLUDE_DIR})
if(SPADE_SANITIZE)
  add_library(spade_stb_instrumented STATIC ${CMAKE_CURRENT_LIST_DIR}/stb_instrumented.cpp)
  target_include_directories(spade_stb_instrumented PRIVATE ${STB_INCLUDE_DIR})
  target_compile_options(spade_stb_instrumented PRIVATE -w)
  target_link_libraries(spade::stb INTERFACE spade_stb_instrumented)
elseif(STB_LIBRARY)
  target_link_libraries(spade::stb INTERFACE ${STB_LIBRARY})
endif()

# zlib (zlib1g-dev): checks a PNG's compressed data before stb decodes it (formats/png_check.h).
find_package(ZLIB REQUIRED)
