#Token sampler(included from worker / engine / CMakeLists.txt).
add_library(latentkv_sampler ${CMAKE_CURRENT_LIST_DIR} / sampler.cc)
    target_include_directories(latentkv_sampler PUBLIC ${PROJECT_SOURCE_DIR})
        target_link_libraries(
            latentkv_sampler PUBLIC latentkv_common absl::span PRIVATE
                absl::flat_hash_map absl::flat_hash_set)

            latentkv_test(sampler_test SOURCES ${CMAKE_CURRENT_LIST_DIR} /
                          sampler_test.cc LIBS latentkv_sampler)
