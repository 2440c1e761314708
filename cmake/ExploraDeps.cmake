# ExploraDeps.cmake — find the system libraries explora builds on (all from Debian).
# scripts/install-deps.sh installs every one of them.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS C)

# iniparser 4.1 ships no pkg-config or CMake file: headers live in <iniparser/...>.
find_path(INIPARSER_INCLUDE_DIR iniparser.h PATH_SUFFIXES iniparser REQUIRED)
find_library(INIPARSER_LIBRARY iniparser REQUIRED)
add_library(explora_dep_iniparser INTERFACE IMPORTED)
target_include_directories(explora_dep_iniparser INTERFACE ${INIPARSER_INCLUDE_DIR})
target_link_libraries(explora_dep_iniparser INTERFACE ${INIPARSER_LIBRARY})

pkg_check_modules(CJSON REQUIRED IMPORTED_TARGET libcjson)

# Image decoding in libexplora (core/src/image.c): libjpeg-turbo's TurboJPEG 2.x API and libspng.
pkg_check_modules(TURBOJPEG REQUIRED IMPORTED_TARGET libturbojpeg)
pkg_check_modules(SPNG REQUIRED IMPORTED_TARGET spng)
# TIFF/GeoTIFF (multispectral bands, e.g. fMoW-Sentinel) in core/src/image_tiff.c: libtiff 4.5 (TIFFOpenOptions).
pkg_check_modules(TIFF REQUIRED IMPORTED_TARGET libtiff-4>=4.5)

# LAPACKE (symmetric eigensolver of `explora analyze`, core/cli/analyze_stats.c); linked into the CLI only.
pkg_check_modules(LAPACKE REQUIRED IMPORTED_TARGET lapacke)

# OpenBLAS: we want the OpenMP build, so that OpenBLAS and our own OpenMP loops
# share one thread pool. Debian's pthread build wins the SONAME alternative
# when both are installed, so point at the openmp directory and bake it into
# the rpath (see docs/DEPENDENCIES.md).
set(EXPLORA_OPENBLAS_OPENMP_DIR /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp)
find_library(OPENBLAS_LIBRARY openblas HINTS ${EXPLORA_OPENBLAS_OPENMP_DIR} NO_DEFAULT_PATH)
if(NOT OPENBLAS_LIBRARY)
  message(FATAL_ERROR "OpenBLAS (OpenMP build) not found in ${EXPLORA_OPENBLAS_OPENMP_DIR}. "
                      "Install it with: apt-get install libopenblas-openmp-dev (or run scripts/install-deps.sh)")
endif()
find_path(OPENBLAS_INCLUDE_DIR cblas.h
  HINTS /usr/include/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp NO_DEFAULT_PATH)
if(NOT OPENBLAS_INCLUDE_DIR)
  find_path(OPENBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas REQUIRED)
endif()
get_filename_component(EXPLORA_OPENBLAS_LIBDIR ${OPENBLAS_LIBRARY} DIRECTORY)
add_library(explora_dep_openblas INTERFACE IMPORTED)
target_include_directories(explora_dep_openblas INTERFACE ${OPENBLAS_INCLUDE_DIR})
target_link_libraries(explora_dep_openblas INTERFACE ${OPENBLAS_LIBRARY})
target_link_options(explora_dep_openblas INTERFACE "-Wl,-rpath,${EXPLORA_OPENBLAS_LIBDIR}")

# MPI (optional): data-parallel training across processes (core/src/comm_mpi.c, explora/comm.h).
# Without it explora still builds and runs as a single process. -DEXPLORA_MPI=OFF skips the search.
option(EXPLORA_MPI "Build the MPI communicator when MPI is found" ON)
set(EXPLORA_HAVE_MPI OFF)
if(EXPLORA_MPI)
  find_package(MPI COMPONENTS C QUIET)
  if(MPI_C_FOUND)
    set(EXPLORA_HAVE_MPI ON)
    message(STATUS "explora: MPI found (${MPI_C_LIBRARIES}): multi-process training enabled")
  else()
    message(STATUS "explora: MPI not found: single-process training only (apt-get install libopenmpi-dev)")
  endif()
endif()
