# Token sampler (included from worker/engine/CMakeLists.txt).
add_library(latentkv_sampler ${CMAKE_CURRENT_LIST_DIR}/sampler.cc)
target_include_directories(latentkv_sampler PUBLIC ${PROJECT_SOURCE_DIR})

latentkv_test(sampler_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/sampler_test.cc LIBS latentkv_sampler)
